"""A real two-node Ray cluster on loopback: `platform search --address` uses both nodes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from autoplat.testing import run_platform

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def _kill_cluster(temp_dir: str) -> None:
    """Stop only this cluster's processes (`ray stop` would stop every Ray on the machine)."""
    roots = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(temp_dir in arg for arg in (p.info["cmdline"] or []))
    ]
    doomed = {child for p in roots for child in p.children(recursive=True)} | set(roots)
    for proc in doomed:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(list(doomed), timeout=10)


def free_port() -> int:
    """A TCP port nobody listens on now, from the OS (never one Ray gives its workers)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def two_node_cluster():
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray puts sockets inside
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [
                RAY,
                "start",
                "--head",
                f"--port={port}",
                f"--temp-dir={temp_dir}",
                "--include-dashboard=false",
                *common,
            ],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
        subprocess.run(
            [RAY, "start", f"--address=127.0.0.1:{port}", *common],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
        yield f"127.0.0.1:{port}"
    finally:
        _kill_cluster(temp_dir)


def test_search_places_trials_on_both_nodes(two_node_cluster, write_config, tmp_path):
    url = f"sqlite:///{tmp_path}/cluster.db"
    path = write_config(name="cluster", trials=4)
    run = run_platform(
        "search",
        str(path),
        "--storage",
        url,
        "--address",
        two_node_cluster,
        RAY_AUTH_MODE="disabled",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    shown = run_platform("show", "cluster", "--storage", url, "--json", timeout=120)
    trials = json.loads(shown.stdout)["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 4
    assert len({t["node"] for t in trials}) == 2  # one CPU per node: both nodes ran trials
