"""The screen of one study, chosen by the study's kind.

``STUDY_SCREENS`` maps a study kind (the ``kind`` column of ``studies``) to the screen
class that shows it; a kind without an entry gets ``SearchStudyScreen``. A new kind of
study plugs in by adding a ``StudyScreen`` subclass to the mapping.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual_plotext import PlotextPlot

from autoplat.core.errors import StoreError
from autoplat.core.store import ALRound, Study, TrialState
from autoplat.tui.base import PollingScreen
from autoplat.tui.data import (
    COLUMNS,
    FRONT_COLUMN,
    FRONT_MARK,
    OBJECTIVE_PREFIX,
    Changes,
    Reader,
    TrialsModel,
    fmt_objective,
    fmt_param,
    fmt_value,
)

STATE_STYLES = {
    TrialState.RUNNING.value: "bold cyan",
    TrialState.COMPLETE.value: "green",
    TrialState.PRUNED.value: "yellow",
    TrialState.FAIL.value: "bold red",
    TrialState.INTERRUPTED.value: "magenta",
}
SORTABLE = ("number", "latest", "best", "duration", "epoch", "state")
PARETO_HELP = (
    " This study has several objectives: {mark} in the front column marks the complete "
    "trials no other complete trial beats on every objective (the Pareto front, as "
    "`platform show` lists it); the panel lists them with their objective values."
)


class StudyScreen(PollingScreen):
    """Base of the per-kind study screens: knows its study's name, goes back on Esc."""

    BINDINGS = [Binding("escape,backspace", "back", "Studies")]

    def __init__(self, study_name: str) -> None:
        super().__init__()
        self.study_name = study_name
        self.study: Study | None = None

    def load_study(self, reader: Reader) -> Study:
        """The study row, read once (worker thread)."""
        if self.study is None:
            study = reader.study(self.study_name)
            if study is None:
                raise StoreError(f"no study named '{self.study_name}' in {reader.url}")
            self.study = study
        return self.study

    def compose_header(self) -> ComposeResult:
        yield Header()
        yield from self.compose_status()

    def on_mount(self) -> None:
        self.title = f"study {self.study_name}"
        super().on_mount()

    def action_back(self) -> None:
        self.app.pop_screen()


class SearchStudyScreen(StudyScreen):
    """A search study: live trials table, metric charts, best params, errors."""

    HELP = (
        "The trials of a search, updated in place as they report. The charts show the "
        "highlighted trial's metric per epoch and the study's best value so far; the panel "
        "shows the best trial's params and the error of a failed trial."
    )
    BINDINGS = [
        Binding("slash", "filter", "Filter state"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse sort", show=False),
    ]

    def __init__(self, study_name: str) -> None:
        super().__init__(study_name)
        self.model: TrialsModel | None = None
        self.states: set[str] | None = None  # the state filter; None: every state
        self.sort_column = "number"
        self.sort_reverse = False
        self.selected: int | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield DataTable(id="trials", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="panels"):
            yield PlotextPlot(id="trial-plot")
            yield PlotextPlot(id="best-plot")
            with VerticalScroll(id="details"):
                yield Static(id="details-text")
        yield Input(
            placeholder="states to show: running complete pruned fail interrupted (empty: all)",
            id="filter",
        )
        yield Footer()

    # -- polling -----------------------------------------------------------------------
    def load(self, reader: Reader) -> Changes:
        if self.model is None:
            self.model = TrialsModel(self.load_study(reader))
        return self.model.poll(reader)

    def show(self, changes: Changes) -> None:
        table = self._table()
        resort = bool(changes.added)
        for number in changes.removed:
            if str(number) in table.rows:
                table.remove_row(str(number))
        for number in changes.added:
            if self._visible(number):
                table.add_row(*self._row(number), key=str(number))
        for number, cells in changes.updated.items():
            key = str(number)
            shown, wanted = key in table.rows, self._visible(number)
            if shown and wanted:
                for column, value in cells.items():
                    table.update_cell(key, column, self._cell(column, value))
                resort |= self.sort_column in cells
            elif wanted:
                table.add_row(*self._row(number), key=key)
                resort = True
            elif shown:
                table.remove_row(key)
        if resort and (self.sort_column != "number" or self.sort_reverse):
            self._sort()
        if self.selected is None and table.row_count:
            row_key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key
            self.selected = int(row_key.value)
        if changes.study_changed:
            self._draw_best()
        if changes.study_changed or self.selected in changes.updated:
            self._draw_trial()

    def status_text(self) -> str:
        model = self.model
        if model is None:
            return ""
        counts: dict[str, int] = defaultdict(int)
        for t in model.trials.values():
            counts[t.state.value] += 1
        if model.objectives:
            objectives = ", ".join(f"{name} ({way[:3]})" for name, way in model.objectives)
            parts = [f"{self.study_name} · {objectives}", f"{len(model.front)} on the Pareto front"]
        else:
            parts = [f"{self.study_name} · {model.study.metric} ({model.study.direction})"]
        parts.append(", ".join(f"{n} {s}" for s, n in counts.items()) or "no trials yet")
        if self.states is not None:
            parts.append(f"filter: {' '.join(sorted(self.states)) or 'none match'}")
        if self.sort_column != "number" or self.sort_reverse:
            parts.append(f"sort: {self.sort_column} {'desc' if self.sort_reverse else 'asc'}")
        return " · ".join(parts)

    # -- the table -------------------------------------------------------------------
    def on_mount(self) -> None:
        self._add_columns(COLUMNS)
        super().on_mount()

    def _add_columns(self, columns: tuple[str, ...]) -> None:
        table = self.query_one("#trials", DataTable)
        for column in columns:
            label = column.removeprefix(OBJECTIVE_PREFIX)
            table.add_column("#" if column == "number" else label, key=column)

    def _table(self) -> DataTable:
        """The trials table; a multi-objective study's columns replace the plain ones once
        the study is read (before any row)."""
        table = self.query_one("#trials", DataTable)
        model = self.model
        if model is not None and model.objectives and FRONT_COLUMN not in table.columns:
            table.clear(columns=True)
            self._add_columns(model.columns)
            self.HELP = type(self).HELP + PARETO_HELP.format(mark=FRONT_MARK)
        return table

    def _visible(self, number: int) -> bool:
        return self.states is None or self.model.trials[number].state.value in self.states

    def _cell(self, column: str, value: str) -> Text:
        if column == FRONT_COLUMN:
            return Text(value, "bold yellow", justify="center")
        return Text(value, STATE_STYLES.get(value, "") if column == "state" else "")

    def _row(self, number: int) -> list[Text]:
        cells = zip(self.model.columns, self.model.cells[number], strict=True)
        return [self._cell(column, value) for column, value in cells]

    def _rebuild(self) -> None:
        """Refill the table (after the filter changed)."""
        table = self._table()
        table.clear()
        numbers = [n for n in sorted(self.model.cells) if self._visible(n)]
        for number in numbers:
            table.add_row(*self._row(number), key=str(number))
        self._sort()

    def _sort(self) -> None:
        table = self._table()
        column, reverse = self.sort_column, self.sort_reverse
        table.sort(
            "number",
            key=lambda n: self.model.sort_key(int(n.plain), column, reverse),
            reverse=reverse,
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.selected = int(event.row_key.value)
            self._draw_trial()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if column in SORTABLE:
            self.sort_reverse = not self.sort_reverse if column == self.sort_column else False
            self.sort_column = column
            self._sort()
            self.update_status()

    def action_sort(self) -> None:
        """Sort by the next sortable column."""
        self.sort_column = SORTABLE[(SORTABLE.index(self.sort_column) + 1) % len(SORTABLE)]
        self.sort_reverse = self.sort_column in ("latest", "best") and self._maximize()
        if self.model is not None:
            self._sort()
        self.update_status()

    def action_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        if self.model is not None:
            self._sort()
        self.update_status()

    def _maximize(self) -> bool:
        return self.model is not None and self.model.maximize

    # -- the filter ------------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-visible")
        box.focus()

    def set_filter(self, text: str) -> None:
        """Show only trials whose state starts with one of the words of ``text``."""
        words = text.replace(",", " ").lower().split()
        states = {s.value for s in TrialState if any(s.value.startswith(w) for w in words)}
        self.states = states if words else None
        if self.model is not None:
            self._rebuild()
        self.update_status()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._close_filter()

    def _close_filter(self) -> None:
        self.query_one("#filter", Input).remove_class("-visible")
        self.query_one("#trials", DataTable).focus()

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus:
            box.value = ""
            self._close_filter()
        else:
            super().action_back()

    # -- charts and details ----------------------------------------------------------
    def _draw_trial(self) -> None:
        model = self.model
        plot = self.query_one("#trial-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        trial = model.trials.get(self.selected) if model and self.selected is not None else None
        if trial is not None and trial.curve:
            plt.plot([s for s, _ in trial.curve], [v for _, v in trial.curve], marker="braille")
        plt.title(f"trial {trial.number}: {model.study.metric}" if trial else "no trial")
        plt.xlabel("epoch")
        plot.refresh()
        self._draw_details()

    def _draw_best(self) -> None:
        model = self.model
        plot = self.query_one("#best-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        xs, ys = model.best_so_far()
        if xs:
            plt.plot(xs, ys, marker="braille")
        plt.title(f"best {model.study.metric} so far")
        plt.xlabel("trial")
        plot.refresh()
        self._draw_details()

    def _draw_details(self) -> None:
        model = self.model
        text = Text()
        trial = model.trials.get(self.selected) if self.selected is not None else None
        if trial is not None and trial.state is TrialState.FAIL:
            text.append(f"trial {trial.number} failed:\n", "bold red")
            text.append(f"{trial.error or '(no error text stored)'}\n\n", "red")
        best = model.best
        if best is None:
            text.append("no complete trial yet", "dim")
        else:
            text.append(f"best: trial {best.number}\n", "bold")
            text.append(f"{model.study.metric} = {fmt_value(best.value)}\n")
            for key, value in best.params.items():
                text.append(f"{key} = {fmt_param(value)}\n")
        if model.objectives:
            self._append_front(text)
        self.query_one("#details-text", Static).update(text)

    def _append_front(self, text: Text) -> None:
        """The Pareto front, by the first objective, with each trial's objective values."""
        model = self.model
        text.append(f"\n{FRONT_MARK} Pareto front: {len(model.front)} trials\n", "bold")
        for name, direction in model.objectives:
            text.append(f"  {name} ({direction})\n", "dim")
        for number in list(model.front):
            trial = model.trials.get(number)  # None: removed by a poll running right now
            if trial is None:
                continue
            values = [fmt_objective(trial.metrics.get(name)) for name, _ in model.objectives]
            text.append(f"trial {number}: {'  '.join(values)}\n")


class ALStudyScreen(StudyScreen):
    """An active-learning study: the learning curve (metric vs labels) per acquisition."""

    HELP = (
        "An active-learning study: one learning curve per acquisition function (the "
        "study's metric against the number of labels), and every round in the table."
    )

    def __init__(self, study_name: str) -> None:
        super().__init__(study_name)
        self._rounds: dict[str, tuple[str, ...]] = {}
        self._curves: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield PlotextPlot(id="al-plot")
        yield DataTable(id="rounds", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#rounds", DataTable)
        for column in ("acquisition", "seed", "round", "labels", "metric"):
            table.add_column(column, key=column)
        super().on_mount()

    def load(self, reader: Reader) -> tuple[Study, list[ALRound]]:
        study = self.load_study(reader)
        return study, reader.al_rounds(study.id)

    def show(self, data: tuple[Study, list[ALRound]]) -> None:
        from autoplat.core.al_study import learning_curves

        study, rounds = data
        table = self.query_one("#rounds", DataTable)
        for r in rounds:
            value = r.metrics_dict.get(study.metric)
            key = f"{r.acquisition}/{r.seed}/{r.round}"
            cells = (r.acquisition, str(r.seed), str(r.round), str(r.n_labeled), fmt_value(value))
            if key not in self._rounds:
                table.add_row(*map(Text, cells), key=key)
            elif self._rounds[key] != cells:
                table.update_cell(key, "metric", Text(cells[4]))
            self._rounds[key] = cells
        self._curves = learning_curves(rounds, study.metric)
        plot = self.query_one("#al-plot", PlotextPlot)
        plot.plt.clear_data()
        for acquisition, curve in self._curves.items():
            plot.plt.plot(curve["labels"], curve["mean"], label=acquisition, marker="braille")
        plot.plt.title(f"{study.metric} vs labels (mean over seeds)")
        plot.plt.xlabel("labels")
        plot.refresh()

    def status_text(self) -> str:
        best = max(
            ((name, c["aulc"][0]) for name, c in self._curves.items() if c["aulc"]),
            key=lambda item: item[1],
            default=None,
        )
        lead = f", best AULC {best[0]} {best[1]:.4f}" if best else ""
        return (
            f"{self.study_name} · active learning · {len(self._curves)} acquisitions, "
            f"{len(self._rounds)} rounds{lead}"
        )


class CurateStudyScreen(StudyScreen):
    """A curation run: records kept by each scorer and in all, growing while it runs."""

    HELP = (
        "A curation run (platform curate): for each scorer the records it kept so far, "
        "its headline numbers (thresholds, counts), and where the output files are."
    )

    def __init__(self, study_name: str) -> None:
        super().__init__(study_name)
        self._records = 0
        self._state = ""

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        with VerticalScroll():
            yield Static(id="curation")
        yield Footer()

    def load(self, reader: Reader) -> tuple[dict[str, Any], dict[str, str]]:
        study = reader.study(self.study_name)  # re-read: the state changes while it runs
        if study is None:
            raise StoreError(f"no study named '{self.study_name}' in {reader.url}")
        return reader.curation(study)

    def show(self, data: tuple[dict[str, Any], dict[str, str]]) -> None:
        from autoplat.views import curate_table

        summary, artifacts = data
        self._state = summary["study"]["state"]
        self._records = max((t["metrics"].get("records", 0) for t in summary["trials"]), default=0)
        self.query_one("#curation", Static).update(curate_table(summary, artifacts))

    def status_text(self) -> str:
        return f"{self.study_name} · curation · {self._state} · {self._records:.0f} records scored"


STUDY_SCREENS: dict[str, type[StudyScreen]] = {
    "search": SearchStudyScreen,
    "al": ALStudyScreen,
    "curate": CurateStudyScreen,
}


def screen_for(kind: str) -> type[StudyScreen]:
    """The screen class for a study kind (search's for unknown kinds)."""
    return STUDY_SCREENS.get(kind, SearchStudyScreen)
