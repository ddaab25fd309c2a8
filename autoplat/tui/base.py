"""The polling screen every TUI screen builds on, and the help and quit dialogs."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Static

from autoplat.core.errors import StoreError

if TYPE_CHECKING:
    from autoplat.tui.app import PlatformApp
    from autoplat.tui.data import Reader


class LiveTable(DataTable):
    """A DataTable whose header keeps up with columns that widen as data arrives.

    Textual (8.2) widens auto-width columns on idle but keeps serving the header line it
    cached before, so a live table's header drifts from its cells until another edit.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._widths: tuple[int, ...] = ()

    def on_idle(self) -> None:
        widths = tuple(column.content_width for column in self.columns.values())
        if widths != self._widths:
            self._widths = widths
            self._clear_caches()
            self.refresh()


class PollingScreen(Screen):
    """A screen fed by a worker that polls the store every ``app.interval`` seconds.

    Subclasses implement ``load`` (runs in a thread: read and diff, no widgets) and
    ``show`` (runs on the UI loop: apply the diff to widgets). A failed poll shows the
    store's message in the status line and is retried on the next tick.
    """

    BINDINGS = [Binding("r", "refresh_now", "Refresh", show=False, tooltip="poll the store now")]

    app: PlatformApp

    def __init__(self) -> None:
        super().__init__()
        self._wake = asyncio.Event()
        self._active = asyncio.Event()
        self._active.set()
        self._lock = asyncio.Lock()
        self.error: str | None = None

    def compose_status(self) -> ComposeResult:
        yield Static(id="status", markup=False)

    def on_mount(self) -> None:
        self._poll_loop()

    def on_screen_suspend(self) -> None:
        self._active.clear()

    def on_screen_resume(self) -> None:
        self._active.set()
        self._wake.set()

    def action_refresh_now(self) -> None:
        self._wake.set()

    @work(exclusive=True, group="poll")
    async def _poll_loop(self) -> None:
        while True:
            await self._active.wait()
            await self.refresh_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.app.interval)
            self._wake.clear()

    async def refresh_once(self) -> None:
        """One poll: read and diff in a thread, then update the widgets."""
        async with self._lock:
            try:
                data = await asyncio.to_thread(self.load, self.app.reader)
            except StoreError as exc:
                self.error = str(exc)
            else:
                self.error = None
            if self not in self.app.screen_stack:  # popped while the thread read
                return
            try:
                if self.error is None:
                    self.show(data)
                self.update_status()
            except NoMatches:  # the screen is being torn down: nothing left to update
                return

    def load(self, reader: Reader) -> Any:
        """Read what the screen shows (worker thread; must not touch widgets)."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        """Apply what ``load`` returned to the widgets (UI loop)."""
        raise NotImplementedError

    def status_text(self) -> str:
        """The status line when the last poll succeeded."""
        return ""

    def update_status(self) -> None:
        status = self.query_one("#status", Static)
        clock = self.app.now().astimezone().strftime("%H:%M:%S")
        if self.error:
            status.update(
                Text(f"{self.error} — retrying every {self.app.interval:g}s ({clock})", "bold red")
            )
        else:
            status.update(Text(f"{self.status_text()} · updated {clock}"))
        status.set_class(bool(self.error), "error")


class HelpScreen(ModalScreen[None]):
    """The keys of the screen below, with what they do."""

    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss", "Close"),
    ]

    def __init__(self, title: str, intro: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self._title, self._intro, self._keys = title, intro, keys

    def compose(self) -> ComposeResult:
        text = Text()
        text.append(f"{self._title}\n", "bold")
        for key, description in self._keys:
            text.append(f"{key:>10}  ", "bold")
            text.append(f"{description}\n")
        text.append(f"\n{self._intro}\n")
        text.append("\nEsc, q or ? closes this help.", "dim")
        with VerticalScroll(id="help"):
            yield Static(text)


class QuitSearchScreen(ModalScreen[str | None]):
    """Asked on quit while `platform search --tui` (or `al --tui`) still runs: stop it or
    leave it."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop"),
        Binding("l", "choose('leave')", "Leave running"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
    ]

    def __init__(self, pid: int, label: str = "search") -> None:
        super().__init__()
        self.pid, self.label = pid, label

    def compose(self) -> ComposeResult:
        with Vertical(id="quit"):
            yield Static(
                f"The {self.label} (PID {self.pid}) is still running. Stop it, or leave it "
                "running in the background?",
                id="question",
            )
            with Horizontal(id="choices"):
                yield Button(f"Stop {self.label} (s)", variant="error", id="stop")
                yield Button("Leave running (l)", variant="primary", id="leave")
                yield Button("Cancel (esc)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_choose(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        self.dismiss(None if choice == "cancel" else choice)
