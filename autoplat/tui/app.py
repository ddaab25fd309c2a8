"""The Textual app behind `platform tui`: studies list, per-kind study screens."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from autoplat.tui.base import HelpScreen, PollingScreen, QuitSearchScreen
from autoplat.tui.data import Reader, StudyRow
from autoplat.tui.studies import StudiesScreen
from autoplat.tui.study import screen_for

CSS = """
#status { height: 1; padding: 0 1; background: $boost; }
#status.error { background: $error 25%; }
#studies, #rounds { height: 1fr; }
#trials { height: auto; max-height: 50%; }
#panels { height: 1fr; min-height: 9; }
#panels > * { border-top: solid $primary 50%; border-title-color: $text; }
#details { width: 36; padding: 0 1; border-left: solid $primary 50%; }
.-narrow #details { width: 30; }
.-narrow #best-plot, .-narrow.-best-chart #trial-plot { display: none; }
.-narrow.-best-chart #best-plot { display: block; }
#al-plot { height: 60%; border-top: solid $primary 50%; border-title-color: $text; }
#filter { display: none; }
#filter.-visible { display: block; }
HelpScreen, QuitSearchScreen { align: center middle; }
#help { width: 76; max-width: 100%; height: auto; max-height: 100%; padding: 1 2;
        background: $panel; border: thick $primary; }
#quit { width: 72; max-width: 100%; height: auto; padding: 1 2; background: $panel;
        border: thick $warning; }
#question { margin-bottom: 1; }
#choices { height: auto; }
#choices Button { width: 1fr; margin: 0 1; }
"""


GENERIC_ACTIONS = {"focus_next", "focus_previous", "copy_text"}  # Textual's own: not in ?


@dataclass
class SearchProcess:
    """The detached `platform search` (or `al`: ``label`` "experiments") a `--tui` run
    watches."""

    process: Popen
    log: Path
    label: str = "search"

    def running(self) -> bool:
        return self.process.poll() is None

    def last_line(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""


class PlatformApp(App[str | None]):
    """Watch the studies of one store; exits with "stop"/"leave" when asked about a search."""

    TITLE = "platform tui"
    CSS = CSS
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="quit (asks first while a --tui run goes on)"),
        Binding("question_mark", "help", "Help", tooltip="this help"),
        Binding("d", "toggle_dark", "Light/dark", show=False, tooltip="light or dark colours"),
    ]

    def __init__(
        self,
        url: str,
        study: str | None = None,
        interval: float = 1.0,
        search: SearchProcess | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.now = clock or (lambda: datetime.now(UTC))  # "now" for elapsed times; tests fix it
        self.reader = Reader(url)
        self.interval = interval
        self.pending_study = study
        self.search = search
        self._search_done = False
        self._leaving = False  # set once exit is asked: no screens are pushed after it

    def on_mount(self) -> None:
        self.sub_title = self.reader.url
        self.push_screen(StudiesScreen())
        if self.search is not None:
            self.set_interval(1.0, self._watch_search)

    def on_unmount(self) -> None:
        self.reader.close()

    def open_study(self, row: StudyRow) -> None:
        if not self._leaving:
            self.push_screen(screen_for(row.kind)(row.name))

    def leave(self, result: str | None) -> None:
        self._leaving = True
        self.exit(result)

    async def _watch_search(self) -> None:
        if self._search_done or self.search.running():
            return
        self._search_done = True
        if isinstance(self.screen, PollingScreen):  # its final state before the notice
            await self.screen.refresh_once()
        code = self.search.process.returncode
        message = f"the {self.search.label} exited with code {code}; log: {self.search.log}"
        last = self.search.last_line()
        self.notify(
            f"{message}\n{last}" if last else message,
            severity="information" if code == 0 else "error",
            timeout=30,
        )
        self.sub_title = f"{self.reader.url} · {self.search.label} exited ({code})"

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        keys = []
        seen = set()
        for active in self.active_bindings.values():
            binding = active.binding  # the screen's and app's keys; table keys are standard
            own = isinstance(active.node, App | Screen)
            generic = binding.system or binding.action.split(".")[-1] in GENERIC_ACTIONS
            key = self.get_key_display(binding)
            if own and binding.description and not generic and key not in seen:
                seen.add(key)
                keys.append((key, binding.tooltip or binding.description))
        screen = self.screen
        intro = getattr(screen, "HELP", "") if isinstance(screen, PollingScreen) else ""
        intro += (
            f"\n\nThe store ({self.reader.url}) is polled every {self.interval:g}s, read-only. "
            "Arrows, PgUp/PgDn and Home/End move in tables; a click on a header sorts."
        )
        self.push_screen(HelpScreen(f"keys: {screen.title or self.title}", intro, keys))

    async def action_quit(self) -> None:
        if self.search is None or not self.search.running():
            self.leave(None)
            return
        if isinstance(self.screen, QuitSearchScreen):
            return

        def chosen(choice: str | None) -> None:
            if choice is not None:
                self.leave(choice)

        self.push_screen(QuitSearchScreen(self.search.process.pid, self.search.label), chosen)


def run_tui(args: argparse.Namespace) -> int:
    """`platform tui`: watch the store at ``--storage`` (``func`` of the subcommand)."""
    from autoplat.core.store import DEFAULT_URL

    url = args.storage or DEFAULT_URL
    if getattr(args, "web", False):
        from autoplat.tui.web import serve

        return serve(args, url)
    PlatformApp(url, study=args.study, interval=args.interval).run()
    return 0
