"""The first screen: every study in the store."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header

from autoplat.tui.base import LiveTable, PollingScreen
from autoplat.tui.data import Reader, StudyRow, plural

STUDY_COLUMNS = (
    ("name", "name"),
    ("kind", "kind"),
    ("state", "state"),
    ("done", "done"),
    ("running", "run"),
    ("failed", "fail"),
    ("best", "best"),
    ("started", "started"),
    ("elapsed", "elapsed"),
)


class StudiesScreen(PollingScreen):
    """The studies in the store; Enter opens one."""

    HELP = "Every study in the store, refreshed live. Enter opens the highlighted study."
    BINDINGS = [Binding("enter", "open", "Open", tooltip="open the highlighted study")]

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, StudyRow] = {}
        self._cells: dict[str, tuple[str, ...]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield from self.compose_status()
        yield LiveTable(id="studies")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in STUDY_COLUMNS:
            table.add_column(label, key=key)
        super().on_mount()

    def load(self, reader: Reader) -> tuple[list[StudyRow], datetime]:
        return reader.studies(), self.app.now()

    def show(self, data: tuple[list[StudyRow], datetime]) -> None:
        rows, now = data
        table = self.query_one(DataTable)
        fresh = {row.name: row for row in rows}
        for name in [n for n in self._cells if n not in fresh]:
            table.remove_row(name)
            del self._cells[name]
        for name, row in fresh.items():
            cells = row.cells(now)
            old = self._cells.get(name)
            if old is None:
                table.add_row(*map(Text, cells), key=name)
            else:
                for (key, _), new, was in zip(STUDY_COLUMNS, cells, old, strict=True):
                    if new != was:
                        table.update_cell(name, key, Text(new), update_width=True)
            self._cells[name] = cells
        self.rows = fresh
        pending = self.app.pending_study
        if pending and pending in fresh:
            self.app.pending_study = None
            self.app.open_study(fresh[pending])

    def status_text(self) -> str:
        pending = self.app.pending_study
        waiting = f" · waiting for study '{pending}' to appear" if pending else ""
        return f"{plural(len(self.rows), 'study')} in {self.app.reader.url}{waiting}"

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        row = self.rows.get(str(event.row_key.value))
        if row is not None:
            self.app.open_study(row)

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
            self.app.open_study(self.rows[str(key.value)])
