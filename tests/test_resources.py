"""Resources no Ray node can give a trial are refused before anything is stored (exit 2),
for `platform search` and `platform al`, on the real local Ray of the test run; a local
Ray starts no worker process a trial cannot use."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from autoplat.cli import main
from autoplat.core.store import Store

pytestmark = pytest.mark.slow

AL = """
[study]
name = "al"
seeds = 1

[model]
name = "mlp"
hidden = 16

[training]
epochs = 1

[dataset]
name = "digits"

[al]
acquisitions = ["random"]
initial = 20
batch_size = 20
rounds = 1

[resources]
{resources}
"""


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (
            "gpus_per_trial = 64",
            "resources.gpus_per_trial = 64 but the Ray cluster has",
        ),
        (
            "cpus_per_trial = 4096",
            "resources.cpus_per_trial = 4096 but the Ray cluster has at most",
        ),
    ],
)
def test_infeasible_resources_exit_2_before_anything_is_stored(
    write_config, tmp_path, capsys, ray_address, resources, message
):
    search = write_config(name="big")
    search.write_text(search.read_text().replace("cpus_per_trial = 1", resources))
    al = tmp_path / "al.toml"
    al.write_text(textwrap.dedent(AL.format(resources=resources)))
    for command, path in (("search", search), ("al", al)):
        url = f"sqlite:///{tmp_path}/{command}.db"
        code = main([command, str(path), "--storage", url, "--address", ray_address])
        error = " ".join(capsys.readouterr().err.split())
        assert code == 2, error
        assert f"{path}: {message}" in error and "--address" in error
        assert "Traceback" not in error
        assert Store(url).studies() == []  # no study row, so none left "running"


IDLE_WORKERS = """
import time

import psutil

from autoplat.core.runner import ensure_ray, shutdown_ray

ensure_ray("local")
time.sleep(3)  # Ray would have started its first driver's workers by now
titles = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
print(sum(title.startswith("ray::IDLE") for title in titles))
shutdown_ray()
"""


def test_local_ray_starts_no_worker_a_trial_cannot_use():
    """Ray starts a worker per CPU for its first driver, but a trial is a Tune actor with
    its own runtime env, which those never serve: a local Ray starts none (it is CPU the
    study's start needs)."""
    done = subprocess.run(
        [sys.executable, "-c", IDLE_WORKERS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "0"
