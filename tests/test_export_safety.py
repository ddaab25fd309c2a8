"""Export never destroys what it did not create: existing files need --force, the store's
own files and recorded checkpoints are never written, and files appear whole or not at all.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import re
import shlex
import shutil
import sqlite3
import subprocess
from pathlib import Path

import onnx
import pytest
import torch

from autoplat.cli import main
from autoplat.core import export
from autoplat.core.export import ExportError, to_onnx, write_files
from autoplat.core.interfaces import OnnxPart
from autoplat.core.store import Store
from autoplat.core.training import load_checkpoint, save_checkpoint
from autoplat.testing import PLATFORM
from tests import test_export

study = test_export.study  # the tiny trained study fixture, built once for this module
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _export(study: dict, out: Path | str, *extra: str) -> int:
    return main(["export", "exp", "--storage", study["url"], "--out", str(out), *extra])


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


def _db(study: dict) -> Path:
    """The store's database file, its write-ahead log folded in first: SQLite itself
    rewrites the file when the log is checkpointed (as the last connection closes), which
    a byte comparison must not mistake for a write by export."""
    path = Path(study["url"].removeprefix("sqlite:///"))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _leftovers(folder: Path) -> list[str]:
    """Temporary files an export left behind."""
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def test_existing_out_needs_force(study: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"someone else's file")
    assert _export(study, out) == 2
    assert _error(capsys) == (
        f"error: {out} exists; pass --force to overwrite it, or choose another --out"
    )
    assert out.read_bytes() == b"someone else's file"
    assert _export(study, out, "--force") == 0
    assert onnx.load(str(out)).metadata_props  # replaced by the exported model
    assert _leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.onnx"
    ]


def test_default_name_is_not_overwritten_either(study: dict, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp-trial0.onnx").write_text("keep")
    assert main(["export", "exp", "--storage", study["url"]]) == 2
    assert "exp-trial0.onnx exists; pass --force" in _error(capsys)
    assert (tmp_path / "exp-trial0.onnx").read_text() == "keep"


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_the_store_s_own_files_are_refused_even_with_force(
    study: dict,
    capsys,
    suffix: str,
) -> None:
    db = _db(study)
    before = db.read_bytes()
    target = db.with_name(db.name + suffix)
    assert _export(study, target, "--force") == 2
    message = _error(capsys)
    assert f"{target} is the results store's " in message
    assert "export never overwrites it, even with --force: choose another --out" in message
    assert db.read_bytes() == before
    assert not target.exists() or b"autoplat" not in target.read_bytes()
    store = Store(study["url"], create=False)
    assert len(store.trials(store.get_study("exp").id)) == 3


@pytest.mark.parametrize("link", [os.symlink, os.link])
def test_links_to_the_store_are_refused(study: dict, tmp_path, capsys, link) -> None:
    db = _db(study)
    before = db.read_bytes()
    alias = tmp_path / "alias.onnx"
    link(db, alias)
    assert _export(study, alias, "--force") == 2
    assert "is the results store's database" in _error(capsys)
    assert db.read_bytes() == before


def test_a_recorded_checkpoint_is_refused_even_with_force(study: dict, capsys) -> None:
    store = Store(study["url"], create=False)
    (artifact,) = store.artifacts(store.get_study("exp").id)
    path = Path(artifact.path)
    before = path.read_bytes()
    assert _export(study, path, "--force") == 2
    message = _error(capsys)
    assert f"{path} is a checkpoint file of study 'exp' recorded in the store" in message
    assert path.read_bytes() == before


def test_a_missing_folder_or_a_folder_is_refused(study: dict, tmp_path, capsys) -> None:
    out = tmp_path / "nope" / "model.onnx"
    assert _export(study, out) == 2
    assert f"the folder of --out {out} does not exist ({out.parent})" in _error(capsys)
    assert not out.parent.exists()
    assert _export(study, tmp_path, "--force") == 2
    assert f"{tmp_path} is a folder; give --out a file name" in _error(capsys)


def test_export_writes_nothing_to_the_store(study: dict, tmp_path) -> None:
    db = _db(study)
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    assert _export(study, tmp_path / "m.onnx") == 0
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before


def _read_only(folder: Path, command: list[str]) -> list[str]:
    """``command`` run with ``folder`` read-only: a read-only bind mount in a private mount
    namespace for root (who ignores permissions), else the folder's permissions."""
    if os.geteuid() != 0:
        return command
    if shutil.which("unshare") is None:
        pytest.skip("root needs unshare(1) to mount the store read-only")
    where = shlex.quote(str(folder))
    mount = f"mount --bind {where} {where} && mount -o remount,ro,bind {where}"
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", mount], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount read-only here: {probe.stderr.decode().strip()}")
    return ["unshare", "--mount", "sh", "-c", f"{mount} && exec {shlex.join(command)}"]


@pytest.mark.slow
def test_export_reads_a_store_on_a_read_only_mount(study: dict, tmp_path: Path) -> None:
    root = _db(study).parent  # the store and the checkpoint it records
    before = sorted((p, p.read_bytes()) for p in root.rglob("*") if p.is_file())
    out = tmp_path / "m.onnx"
    command = [*PLATFORM, "export", "exp", "--storage", study["url"], "--out", str(out)]
    modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")]}
    for path in modes:
        path.chmod(modes[path] & ~0o222)
    try:
        result = subprocess.run(_read_only(root, command), capture_output=True, text=True)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert result.returncode == 0, result.stderr
    assert onnx.load(str(out)).metadata_props
    assert sorted((p, p.read_bytes()) for p in root.rglob("*") if p.is_file()) == before


def test_a_failed_parity_check_keeps_the_old_file(study: dict, tmp_path, monkeypatch, capsys):
    def off_by_a_bit(model: torch.nn.Module, example: torch.Tensor, opset: int) -> bytes:
        changed = copy.deepcopy(model)
        with torch.no_grad():
            changed.head.bias += 0.01
        return to_onnx(changed, example, opset)

    monkeypatch.setattr(export, "to_onnx", off_by_a_bit)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")
    assert _export(study, out, "--force") == 2
    assert "parity check failed" in _error(capsys)
    assert out.read_bytes() == b"previous export" and _leftovers(tmp_path) == []


def test_an_existing_part_file_refuses_the_whole_export(study: dict, tmp_path) -> None:
    tm = export.load_trial_model(Store(study["url"], create=False), "exp")
    x = tm.test[0][:8]
    tm.parts = {"a": OnnxPart(tm.model, (x,)), "b": OnnxPart(tm.model, (x,))}
    (tmp_path / "two.b.onnx").write_text("mine")
    with pytest.raises(ExportError, match=re.escape(f"{tmp_path / 'two.b.onnx'} exists")):
        export.export_trial(tm, tmp_path / "two.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.b.onnx"]
    done = export.export_trial(tm, tmp_path / "two.onnx", force=True)
    assert [d.path.name for d in done] == ["two.a.onnx", "two.b.onnx"]
    assert all(onnx.load(str(d.path)).metadata_props for d in done)
    assert _leftovers(tmp_path) == []


def test_files_appear_whole_or_not_at_all(tmp_path: Path) -> None:
    first, second = tmp_path / "a.onnx", tmp_path / "gone" / "b.onnx"
    with pytest.raises(FileNotFoundError):  # the second cannot be written: neither appears
        write_files([(first, b"a"), (second, b"b")])
    assert list(tmp_path.iterdir()) == []
    first.write_bytes(b"old")
    with pytest.raises(ExportError, match="exists; pass --force"):
        write_files([(first, b"new")])
    assert first.read_bytes() == b"old" and _leftovers(tmp_path) == []
    write_files([(first, b"new")], force=True)
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # the permissions any new file gets here
    assert first.read_bytes() == b"new" and first.stat().st_mode == plain.stat().st_mode


def test_checkpoints_are_replaced_whole_and_read_as_tensors_only(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "t0.pt"
    save_checkpoint(model, path)
    save_checkpoint(torch.nn.Linear(3, 2), path)  # replaces it
    assert os.listdir(tmp_path) == ["t0.pt"]
    assert set(load_checkpoint(path)) == {"weight", "bias"}
    torch.save({"weight": torch.zeros(1), "call": os.system}, path)  # code, not tensors
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(path)


def test_every_torch_load_is_weights_only() -> None:
    root = Path(export.__file__).parents[1]
    calls = [
        f"{path.relative_to(root.parent)}: {line.strip()}"
        for path in root.rglob("*.py")
        for line in path.read_text().splitlines()
        if "torch.load(" in line and "weights_only=True" not in line
    ]
    assert calls == []
