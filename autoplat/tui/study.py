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
from autoplat.tui.base import LiveTable, PollingScreen
from autoplat.tui.data import (
    COLUMNS,
    FILTER_HELP,
    FRONT_COLUMN,
    FRONT_MARK,
    OBJECTIVE_PREFIX,
    RULE,
    RULE_SHORT,
    Changes,
    Reader,
    TrialFilter,
    TrialsModel,
    axis,
    fmt_objective,
    fmt_param,
    fmt_value,
    parse_filter,
    plural,
    tick_label,
)

STATE_STYLES = {
    TrialState.RUNNING.value: "bold cyan",
    TrialState.COMPLETE.value: "green",
    TrialState.PRUNED.value: "yellow",
    TrialState.FAIL.value: "bold red",
    TrialState.INTERRUPTED.value: "magenta",
}
SORTABLE = ("number", "latest", "peak", "duration", "epoch", "state")
PARETO_HELP = (
    " This study has several objectives: {mark} in the front column marks the complete "
    "trials no other complete trial beats on every objective (the Pareto front, as "
    "`platform show` lists it); the panel lists them with their objective values."
)


class StudyScreen(PollingScreen):
    """Base of the per-kind study screens: knows its study's name, goes back on Esc."""

    BINDINGS = [Binding("escape,backspace", "back", "Studies", tooltip="back to the studies")]

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


def draw_lines(
    plot: PlotextPlot, title: str, xlabel: str, lines: dict[str, tuple[list, list]]
) -> None:
    """Redraw ``plot``: one braille line per label (``""``: no legend), both axes fitted
    to the data on round ticks, the title in the widget's border (visible when narrow)."""
    plt = plot.plt
    plt.clear_data()
    xs = [x for x_values, _ in lines.values() for x in x_values]
    ys = [y for _, y_values in lines.values() for y in y_values]
    for label, (x_values, y_values) in lines.items():
        if x_values:
            plt.plot(x_values, y_values, marker="braille", label=label or None)
    whole = all(float(x).is_integer() for x in xs)
    for ticks, limit, set_ticks in (
        (axis(ys), plt.ylim, plt.yticks),
        (axis(xs, whole=whole), plt.xlim, plt.xticks),
    ):
        if ticks:
            limit(ticks[0], ticks[-1])
            set_ticks(ticks, [tick_label(t, ticks) for t in ticks])
    plt.xlabel(xlabel)
    plot.border_title = title
    plot.refresh()


class SearchStudyScreen(StudyScreen):
    """A search study: live trials table, metric charts, best params, errors."""

    HELP = (
        "The trials of a search, updated in place as they report. The charts show the "
        "highlighted trial's metric per epoch and the study's best value so far; the panel "
        f"shows the best trial's params and the error of a failed trial.\n\n{RULE}\n\n"
        f"/ filters by {FILTER_HELP}; Esc clears it. Below 100 columns one chart shows at "
        "a time: c swaps them."
    )
    BINDINGS = [
        Binding("slash", "filter", "Filter", tooltip="filter trials: states, depth=3, lr<0.01"),
        Binding("c", "chart", "Chart", tooltip="swap the trial / best-so-far chart (narrow)"),
        Binding("s", "sort", "Sort", tooltip="sort by the next column"),
        Binding("S", "reverse", "Reverse sort", show=False, tooltip="reverse the sort"),
    ]

    def __init__(self, study_name: str) -> None:
        super().__init__(study_name)
        self.model: TrialsModel | None = None
        self.filter: TrialFilter | None = None  # None: every trial
        self.filter_hint = ""  # why the filter shows nothing, or what is wrong with it
        self._filter_error = ""
        self.sort_column = "number"
        self.sort_reverse = False
        self.selected: int | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield LiveTable(id="trials")
        with Horizontal(id="panels"):
            yield PlotextPlot(id="trial-plot")
            yield PlotextPlot(id="best-plot")
            with VerticalScroll(id="details"):
                yield Static(id="details-text")
        yield Input(placeholder=f"filter: {FILTER_HELP}", id="filter")
        yield Footer()

    # -- polling -----------------------------------------------------------------------
    def load(self, reader: Reader) -> Changes:
        if self.model is None:
            self.model = TrialsModel(self.load_study(reader))
        return self.model.poll(reader, self.app.now())

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
                    table.update_cell(key, column, self._cell(column, value), update_width=True)
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
        if self.filter is not None:
            self._show_hint()
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
            parts = [objectives, f"{len(model.front)} on the Pareto front"]
        else:
            parts = [f"{model.study.metric} ({model.study.direction[:3]})"]
        parts.append(", ".join(f"{n} {s}" for s, n in counts.items()) or "no trials yet")
        if self.filter is not None:
            shown = sum(map(self._visible, model.trials))
            parts.append(f"filter `{self.filter.text}`: {shown} shown")
        if self.filter_hint:
            parts.append(self.filter_hint)
        if self.sort_column != "number" or self.sort_reverse:
            parts.append(f"sort: {self.sort_column} {'desc' if self.sort_reverse else 'asc'}")
        return " · ".join(parts)

    # -- the table -------------------------------------------------------------------
    def on_mount(self) -> None:
        self._add_columns(COLUMNS)
        self.sub_title = RULE_SHORT
        self.query_one("#details").border_title = "best trial"
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
        return self.filter is None or self.filter.matches(self.model.trials[number])

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
        self.sort_reverse = self.sort_column in ("latest", "peak") and self._maximize()
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
        """Show only the trials ``text`` selects (states, param conditions); a word that
        is neither keeps the last filter and says why in the hint."""
        try:
            self.filter, self._filter_error = parse_filter(text), ""
        except ValueError as exc:
            self._filter_error = str(exc)
        else:
            if self.model is not None:
                self._rebuild()
        self._show_hint()
        self.update_status()

    def _empty_reason(self) -> str:
        """Why the filter shows no trial ("" when it shows some or there is none)."""
        model = self.model
        if self.filter is None or model is None or any(map(self._visible, model.trials)):
            return ""
        known = model.params
        listed = f" (params: {', '.join(known)})" if known else ""
        unknown = self.filter.unknown(known)
        if unknown:
            return f"no trial has a param {', '.join(unknown)}{listed}"
        return f"no trial matches `{self.filter.text}`{listed}; Esc clears the filter"

    def _show_hint(self) -> None:
        """The filter's hint in the filter box's border (and the next status line)."""
        self.filter_hint = self._filter_error or self._empty_reason()
        self.query_one("#filter", Input).border_title = self.filter_hint or None

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
    def action_chart(self) -> None:
        """Swap the trial's chart and the best-so-far chart (narrow terminals show one)."""
        self.toggle_class("-best-chart")

    def _draw_trial(self) -> None:
        model = self.model
        trial = model.trials.get(self.selected) if model and self.selected is not None else None
        curve = trial.curve if trial is not None else []
        title = f"trial {trial.number}: {model.study.metric}" if trial else "no trial"
        if trial is not None and not curve:
            title += " (no epoch reported yet)"
        line = ([s for s, _ in curve], [v for _, v in curve])
        draw_lines(self.query_one("#trial-plot", PlotextPlot), title, "epoch", {"": line})
        self._draw_details()

    def _draw_best(self) -> None:
        model = self.model
        title = f"best {model.study.metric} so far"
        line = model.best_so_far()
        draw_lines(self.query_one("#best-plot", PlotextPlot), title, "trial", {"": line})
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
        self._wanted: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield PlotextPlot(id="al-plot")
        yield LiveTable(id="rounds")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#rounds", DataTable)
        for column in ("acquisition", "seed", "round", "labels", "metric"):
            table.add_column(column, key=column)
        super().on_mount()

    def load(self, reader: Reader) -> tuple[Study, list[ALRound], list[dict[str, Any]]]:
        study = self.load_study(reader)
        return study, reader.al_rounds(study.id), reader.labels_wanted(study.id)

    def show(self, data: tuple[Study, list[ALRound], list[dict[str, Any]]]) -> None:
        from autoplat.core.al_study import learning_curves

        study, rounds, self._wanted = data
        table = self.query_one("#rounds", DataTable)
        for r in rounds:
            value = r.metrics_dict.get(study.metric)
            key = f"{r.acquisition}/{r.seed}/{r.round}"
            cells = (r.acquisition, str(r.seed), str(r.round), str(r.n_labeled), fmt_value(value))
            if key not in self._rounds:
                table.add_row(*map(Text, cells), key=key)
            elif self._rounds[key] != cells:
                table.update_cell(key, "metric", Text(cells[4]), update_width=True)
            self._rounds[key] = cells
        self._curves = learning_curves(rounds, study.metric)
        lines = {name: (c["labels"], c["mean"]) for name, c in self._curves.items()}
        title = f"{study.metric} vs labels (mean over seeds)"
        draw_lines(self.query_one("#al-plot", PlotextPlot), title, "labels", lines)

    def status_text(self) -> str:
        best = max(
            ((name, c["aulc"][0]) for name, c in self._curves.items() if c["aulc"]),
            key=lambda item: item[1],
            default=None,
        )
        lead = f", best AULC {best[0]} {best[1]:.4f}" if best else ""
        if self._wanted:  # a person must label: say what and where, first
            first = self._wanted[0]
            return f"waiting for {plural(first['ids'], 'label')}: {first['query']}"
        return (
            f"{plural(len(self._curves), 'acquisition')}, "
            f"{plural(len(self._rounds), 'round')}{lead}"
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
        return f"curation {self._state} · {self._records:.0f} records scored"


STUDY_SCREENS: dict[str, type[StudyScreen]] = {
    "search": SearchStudyScreen,
    "al": ALStudyScreen,
    "curate": CurateStudyScreen,
}


def screen_for(kind: str) -> type[StudyScreen]:
    """The screen class for a study kind (search's for unknown kinds)."""
    return STUDY_SCREENS.get(kind, SearchStudyScreen)
