"""The TUI as a user runs it, in a pseudo-terminal: `platform search --tui` and `platform
al --tui` start their study detached and watch it to the end, then q quits and the
command exits with the study's code; `platform tui` opens a store's study."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from autoplat.core.store import Store, StudyState
from autoplat.testing import PLATFORM

pytestmark = pytest.mark.slow  # each test runs `platform` (and Ray trials)

AL = """
[study]
name = "al-tui"
seeds = 1
[model]
name = "mlp"
hidden = 32
depth = 1
[training]
epochs = 3
lr = 0.01
[dataset]
name = "digits"
[al]
acquisitions = ["margin"]
initial = 20
batch_size = 20
budget = 40
"""


class Terminal:
    """``platform ARGS`` on an 80x24 pseudo-terminal; its screen output collected as text."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        master, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
        self.process = subprocess.Popen(
            [*PLATFORM, *args], stdin=child, stdout=child, stderr=child, cwd=cwd, env=env
        )
        os.close(child)
        self.master, self.chunks = master, []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the child closed the terminal
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(self.chunks).decode(errors="replace"))

    def wait_for(self, check, what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.process.poll() is None, f"exited before {what}:\n{self.text[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{self.text[-3000:]}"
            time.sleep(0.2)

    def quit(self) -> int:
        os.write(self.master, b"q")
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            os.close(self.master)


def finished(url: str, name: str):
    def check() -> bool:
        study = Store(url).find_study(name)
        return study is not None and study.state == StudyState.FINISHED

    return check


def test_search_tui_watches_the_study_to_the_end(write_config, tmp_path, ray_address) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    config = write_config(name="tui-search", trials=1, epochs=1)
    tui = Terminal(["search", str(config), "--tui", "--storage", url, "--address", ray_address],
                   tmp_path)  # fmt: skip
    tui.wait_for(finished(url, "tui-search"), "finished study")
    tui.wait_for(lambda: "exited with code 0" in tui.text, "the app noticing the exit")
    assert "1 complete" in tui.text
    assert tui.quit() == 0, tui.text[-3000:]
    assert "`platform search` exited with code 0; log: runs/search-tui-search-" in tui.text
    (log,) = (tmp_path / "runs").glob("search-tui-search-*.log")
    assert "tui-search" in log.read_text()


def test_al_tui_then_platform_tui_opens_its_study(tmp_path, ray_address) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    config = tmp_path / "al.toml"
    config.write_text(AL)
    tui = Terminal(["al", str(config), "--tui", "--storage", url, "--address", ray_address],
                   tmp_path)  # fmt: skip
    tui.wait_for(finished(url, "al-tui"), "finished study")
    tui.wait_for(lambda: "exited with code 0" in tui.text, "the app noticing the exit")
    assert "margin" in tui.text
    assert tui.quit() == 0, tui.text[-3000:]
    assert "`platform al` exited with code 0" in tui.text

    viewer = Terminal(["tui", "--storage", url, "--study", "al-tui"], tmp_path)
    viewer.wait_for(lambda: "best AULC margin" in viewer.text, "the study's status line")
    assert viewer.quit() == 0, viewer.text[-3000:]
