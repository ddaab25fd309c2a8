"""`platform tui --web`: served by textual-serve, opened in headless Chromium.

textual-serve draws the terminal on a canvas (xterm.js), so the page's DOM holds no text:
the test drives Chromium over its DevTools protocol and reads what the app sent the page
(the websocket frames Chromium received), checks that the page drew it (xterm.js marks
the body ``-first-byte``) and keeps a screenshot. Chromium is Debian's package
(`apt-get install chromium`; .ci/run installs it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from autoplat.cli import main
from autoplat.core.store import Store, TrialState
from autoplat.tui.web import app_command, public_url

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: apt-get install -y chromium"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fill(store: Store) -> None:
    study = store.create_study("web-demo", metric="val_accuracy", target_trials=3)
    trial = store.start_trial(study.id, {"lr": 0.01})
    store.add_metrics(trial.id, 1, {"val_accuracy": 0.8})
    store.finish_trial(trial.id, TrialState.COMPLETE, value=0.8)


def start_server(url: str, port: int) -> tuple[subprocess.Popen, str]:
    """`platform tui --web` in its own process group; returns it and its first line."""
    cmd = [sys.executable, "-m", "autoplat.cli", "tui", "--web", "--port", str(port)]
    server = subprocess.Popen(
        [*cmd, "--storage", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    first = server.stdout.readline()
    return server, first


class DevTools:
    """The few DevTools protocol calls the test needs, over aiohttp's websocket client."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id, self.frames = ws, 0, b""

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.receive()
            if message.get("id") == self.next_id:
                return message.get("result", {})

    async def receive(self) -> dict[str, Any]:
        message = json.loads((await self.ws.receive()).data)
        if message.get("method") == "Network.webSocketFrameReceived":
            frame = message["params"]["response"]
            data = frame["payloadData"]
            self.frames += base64.b64decode(data) if frame["opcode"] == 2 else data.encode()
        return message

    async def until_sent(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            while text.encode() not in self.frames:
                await asyncio.wait_for(self.receive(), deadline - time.monotonic())
        except TimeoutError:
            shown = self.frames.decode(errors="replace")[-400:]
            raise AssertionError(f"the page never received {text!r}; it got: {shown}") from None


async def open_in_chromium(address: str, screenshot: Path) -> tuple[bytes, str]:
    """Open ``address`` in headless Chromium; the app's output the page received once it
    shows the studies table, and the body's classes."""
    import aiohttp

    profile = screenshot.parent / "chromium-profile"
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # tests run as root in CI containers
            "--disable-gpu",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1200,800",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        devtools = None
        for line in browser.stderr:
            found = re.search(r"DevTools listening on ws://[\d.]+:(\d+)/", line)
            if found:
                devtools = found.group(1)
                break
        assert devtools, "chromium did not open its DevTools port"
        async with aiohttp.ClientSession() as http:
            pages = await (await http.get(f"http://127.0.0.1:{devtools}/json/list")).json()
            page = next(p for p in pages if p["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tools = DevTools(ws)
                await tools.call("Network.enable")
                await tools.call("Page.navigate", url=address)
                await tools.until_sent("1 study in", timeout=30)
                await asyncio.sleep(0.5)  # xterm.js draws the bytes on its next frame
                shot = await tools.call("Page.captureScreenshot")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                body = await tools.call("Runtime.evaluate", expression="document.body.className")
                return tools.frames, body["result"]["value"]
    finally:
        browser.terminate()
        browser.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_web_serves_the_studies_table_to_chromium(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    fill(store)
    port = free_port()
    server, first = start_server(store.url, port)
    try:
        address = f"http://127.0.0.1:{port}"
        assert first.startswith(f"platform tui serving {store.url} at {address}"), first
        frames, body = asyncio.run(open_in_chromium(address, tmp_path / "web.png"))
        text = frames.decode(errors="replace")
        assert "web-demo" in text and "0.8000" in text  # the studies table's row
        assert "-first-byte" in body  # xterm.js drew what arrived
        assert (tmp_path / "web.png").stat().st_size > 5000

        # Ctrl-C stops the server and the app it ran for the page; the store is intact.
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
        served = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
        assert not [c for c in served if f"tui --storage {store.url}" in c]
        assert [s.name for s in store.studies()] == ["web-demo"]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_web_refuses_a_taken_port_and_a_bad_host(capsys, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["tui", "--web", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and "pick another --port" in err
    assert main(["tui", "--web", "--host", "no-such-host.invalid"]) == 2
    assert "--host no-such-host.invalid: not an address" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["tui", "--web", "--port", "70000"])
    assert exit_info.value.code == 2
    assert "give a port number from 1 to 65535" in capsys.readouterr().err


def test_served_command_and_address() -> None:
    class Args:
        interval, study = 0.5, "my study"

    command = app_command(Args, "sqlite:///runs/a b.db")
    assert command.endswith("-m autoplat.cli tui --storage 'sqlite:///runs/a b.db' "
                            "--interval 0.5 --study 'my study'")  # fmt: skip
    assert public_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert public_url("::1", 8000) == "http://[::1]:8000"
    assert public_url("0.0.0.0", 80) == f"http://{socket.gethostname()}:80"
