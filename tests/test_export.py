"""ONNX export of a trial's checkpoint, onnxruntime predict, and checkpoint retention."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from autoplat.cli import main
from autoplat.core import export
from autoplat.core.export import to_onnx
from autoplat.core.predict import default_providers
from autoplat.core.store import Store, TrialState
from autoplat.core.study import CHECKPOINT, record_checkpoint
from autoplat.core.training import save_checkpoint, train_classification
from autoplat.plugins.architectures.vit import ViT
from autoplat.plugins.datasets.digits import Digits
from autoplat.plugins.datasets.splits import SplitOptions
from autoplat.testing import run_platform

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARAMS = {
    "depth": 1,
    "width": 16,
    "heads": 2,
    "mlp_ratio": 2,
    "patch_size": 4,
    "dropout": 0.0,
    "lr": 3e-3,
    "batch_size": 128,
    "epochs": 2,
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict:
    """A store with a study as `platform search` leaves it: a complete trial with its
    checkpoint file, a complete trial without one, and a failed trial."""
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("export")
    url = f"sqlite:///{root}/runs.db"
    raw = tomllib.loads(TINY.format(name="exp", trials=3, epochs=2, strategy="random"))
    store = Store(url)
    row = store.create_study("exp", config=json.dumps(raw), target_trials=3)
    splits = Digits().load(SplitOptions(), seed=0)
    arch = {k: PARAMS[k] for k in ViT.defaults}
    torch.manual_seed(0)
    model = ViT().build(arch, splits.spec)
    metrics = train_classification(model, splits, PARAMS, lambda step, m: None, seed=0)
    best = store.start_trial(row.id, PARAMS)
    store.add_metrics(best.id, 2, metrics)
    store.finish_trial(best.id, TrialState.COMPLETE, value=metrics["val_accuracy"])
    path = root / "checkpoints" / "exp" / "t0.pt"
    save_checkpoint(model, path)
    store.add_artifact(row.id, best.id, CHECKPOINT, str(path))
    other = store.start_trial(row.id, {**PARAMS, "width": 32})
    store.finish_trial(other.id, TrialState.COMPLETE, value=0.1)
    failed = store.start_trial(row.id, {**PARAMS, "lr": 1e9})
    store.finish_trial(failed.id, TrialState.FAIL, error="TrialFailed: loss became NaN")
    return {"url": url, "root": root, "model": model.eval(), "splits": splits}


@pytest.fixture(scope="module")
def exported(study: dict) -> Path:
    out = study["root"] / "model.onnx"
    assert main(["export", "exp", "--storage", study["url"], "--out", str(out)]) == 0
    return out


def test_export_writes_metadata_and_matches_torch(study: dict, exported: Path) -> None:
    proto = onnx.load(str(exported))
    assert proto.opset_import[0].version >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["autoplat.study"] == "exp" and meta["autoplat.trial"] == "0"
    assert json.loads(meta["autoplat.params"]) == PARAMS
    value = Store(study["url"], create=False).trials(1)[0].value
    assert meta["autoplat.metric"] == "val_accuracy" and float(meta["autoplat.value"]) == value
    assert json.loads(meta["autoplat.input_shape"]) == [1, 8, 8]
    assert json.loads(meta["autoplat.labels"]) == [str(i) for i in range(10)]
    assert json.loads(meta["autoplat.preprocessing"])["color"] == "grayscale"
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    x = study["splits"].test[0]
    for batch in (x[:1], x[:7], x):  # the batch axis is dynamic
        with torch.inference_mode():
            expected = study["model"](batch).numpy()
        got = session.run(None, {"input": batch.numpy()})[0]
        assert np.abs(got - expected).max() < 1e-4


def test_export_default_name(study: dict, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["export", "exp", "--trial", "0", "--storage", study["url"]]) == 0
    assert (tmp_path / "exp-trial0.onnx").exists()
    assert "parity on 270 test inputs" in capsys.readouterr().out


def test_export_fails_when_onnxruntime_differs(study: dict, tmp_path, monkeypatch, capsys):
    def off_by_a_bit(model: torch.nn.Module, example: torch.Tensor, opset: int) -> bytes:
        changed = copy.deepcopy(model)
        with torch.no_grad():
            changed.head.bias += 0.01
        return to_onnx(changed, example, opset)

    monkeypatch.setattr(export, "to_onnx", off_by_a_bit)
    out = tmp_path / "never.onnx"
    assert main(["export", "exp", "--storage", study["url"], "--out", str(out)]) == 2
    message = capsys.readouterr().err.replace("\n", " ")
    assert "parity check failed" in message and "by up to 0.01 on 270 test inputs" in message
    assert "(tolerance 0.0001)" in message and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no study named 'nope'"),
        (["exp", "--trial", "9"], "has no trial 9 (trials: 0..2)"),
        (["exp", "--trial", "1"], "trial 1 of study 'exp' has no checkpoint (trials with one: 0)"),
        (["exp", "--trial", "2"], "is fail: TrialFailed: loss became NaN"),
    ],
)
def test_export_errors_are_clear(study: dict, capsys, args: list[str], message: str) -> None:
    assert main(["export", *args, "--storage", study["url"]]) == 2
    captured = capsys.readouterr()
    assert message in captured.err.replace("\n", " ") and "Traceback" not in captured.err


def test_predict_on_png_npy_and_csv(study: dict, exported: Path, tmp_path, capsys) -> None:
    x, y = study["splits"].test
    png = tmp_path / "digit.png"
    Image.fromarray((x[0, 0].numpy() * 255).round().astype(np.uint8)).save(png)
    big = tmp_path / "big.png"  # resized to 8x8 by predict
    Image.fromarray((x[1, 0].numpy() * 255).astype(np.uint8)).resize((32, 32)).save(big)
    np.save(tmp_path / "one.npy", x[2].numpy())
    np.save(tmp_path / "many.npy", x[:5].numpy())
    np.savetxt(tmp_path / "rows.csv", x[:3].reshape(3, -1).numpy(), delimiter=",")
    files = [png, big, tmp_path / "one.npy", tmp_path / "many.npy", tmp_path / "rows.csv"]
    capsys.readouterr()
    assert main(["predict", str(exported), *map(str, files), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 + 1 + 1 + 5 + 3
    assert rows[3]["input"] == f"{tmp_path / 'many.npy'}[0]"
    pixels = torch.from_numpy(np.asarray(Image.open(png), dtype=np.float32) / 255)[None, None]
    with torch.inference_mode():
        probs = study["model"](torch.cat([pixels, x[2:3], x[:5], x[:3]])).softmax(1)
    expected = [probs[0]] + list(probs[1:])
    for row, p in zip([rows[0], *rows[2:]], expected, strict=True):
        assert row["label"] == str(int(p.argmax())) and row["index"] == int(p.argmax())
        assert row["probability"] == pytest.approx(float(p.max()), abs=1e-4)
    assert main(["predict", str(exported), str(png)]) == 0
    assert "CPUExecutionProvider" in capsys.readouterr().out


def test_predict_errors_are_clear(exported: Path, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 7), np.float32))
    (tmp_path / "x.txt").write_text("1")
    cases = [
        ([str(tmp_path / "missing.onnx"), str(bad)], "no model file"),
        ([str(exported), str(tmp_path / "nope.png")], "does not exist"),
        ([str(exported), str(bad)], "has shape (3, 7); the model takes (1, 8, 8)"),
        ([str(exported), str(tmp_path / "x.txt")], "unknown file type '.txt'"),
    ]
    for args, message in cases:
        assert main(["predict", *args]) == 2
        assert message in capsys.readouterr().err.replace("\n", " ")


def test_predict_takes_options_anywhere_and_stacks_without_a_channel_axis(
    study: dict, exported: Path, tmp_path, capsys
) -> None:
    x = study["splits"].test[0][:5].numpy()  # (5, 1, 8, 8)
    np.save(tmp_path / "full.npy", x)
    np.save(tmp_path / "flat.npy", x[:, 0])  # (5, 8, 8): the channel axis added
    np.save(tmp_path / "one.npy", x[0, 0])  # (8, 8): one example
    files = [str(tmp_path / n) for n in ("full.npy", "flat.npy", "one.npy")]
    capsys.readouterr()
    argv = ["predict", str(exported), files[0], "--json", files[1], "--batch-size", "2", files[2]]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows[5:]] == [f"{files[1]}[{i}]" for i in range(5)] + [files[2]]
    assert [r["index"] for r in rows[:5]] == [r["index"] for r in rows[5:10]]
    assert rows[10]["probability"] == pytest.approx(rows[0]["probability"], abs=1e-6)


def test_predict_refuses_unclear_shapes_with_the_fix() -> None:
    from autoplat.core.predict import ModelInfo, PredictError, _stack, image_preprocessing

    rgb = (3, 8, 8)
    assert ModelInfo(rgb, [], image_preprocessing(rgb), {}).modality == "image"
    assert _stack(np.zeros((2, 3, 8, 8)), rgb, Path("a.npy")).shape == (2, 3, 8, 8)
    with pytest.raises(PredictError, match=r"channels-last: np.moveaxis\(a, -1, -3\)"):
        _stack(np.zeros((2, 8, 8, 3)), rgb, Path("a.npy"))
    with pytest.raises(PredictError, match="lacks the model's 3 channels"):
        _stack(np.zeros((2, 8, 8)), rgb, Path("a.npy"))
    with pytest.raises(PredictError, match=r"\(8, 8\) examples without the size-1 axes"):
        _stack(np.zeros((2, 7, 7)), (1, 8, 8), Path("a.npy"))


def test_predict_hints_at_invert_for_dark_on_light_images(
    study: dict, exported: Path, tmp_path, capsys
) -> None:
    """With the training images' border brightness in the model (export records it), a
    digit drawn dark on white gets a hint naming --invert; the right way round, none."""
    from autoplat.core.predict import with_border_mean

    x = study["splits"].test[0]
    proto = onnx.load(str(exported))
    meta = {p.key: p.value for p in proto.metadata_props}
    prep = with_border_mean(json.loads(meta["autoplat.preprocessing"]), x)
    assert prep["border_mean"] < 0.25  # digits: light strokes on a dark background
    meta["autoplat.preprocessing"] = json.dumps(prep)
    onnx.helper.set_model_props(proto, meta)
    model = tmp_path / "digits.onnx"
    onnx.save(proto, str(model))
    pixels = (x[0, 0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "light-on-dark.png")
    Image.fromarray(255 - pixels).save(tmp_path / "dark-on-light.png")
    normal, inverted = str(tmp_path / "light-on-dark.png"), str(tmp_path / "dark-on-light.png")
    capsys.readouterr()

    def predict(*args: str) -> tuple[list[dict], str]:
        assert main(["predict", str(model), *args, "--json"]) == 0
        captured = capsys.readouterr()
        return json.loads(captured.out), captured.err.strip()

    rows, hint = predict(normal)
    assert hint == ""
    _, hint = predict(normal, inverted)
    assert hint.startswith(f"hint: {inverted} has a light background (border brightness 0.")
    assert f"trained on light-on-dark images (border {prep['border_mean']:.2f})" in hint
    assert hint.endswith("if its predictions look wrong, add --invert")
    fixed, hint = predict(inverted, "--invert")
    assert hint == "" and fixed[0]["index"] == rows[0]["index"]
    assert fixed[0]["probability"] == pytest.approx(rows[0]["probability"], abs=1e-6)
    _, hint = predict(normal, "--invert")
    assert hint.startswith(f"hint: inverted by --invert, {normal} has a light background")
    assert hint.endswith("drop --invert")
    older = {k: v for k, v in prep.items() if k != "border_mean"}  # exported before it
    onnx.helper.set_model_props(proto, meta | {"autoplat.preprocessing": json.dumps(older)})
    onnx.save(proto, str(model))
    assert predict(inverted)[1] == ""


def test_cpu_machines_get_the_cpu_provider_only() -> None:
    if not torch.cuda.is_available() and not Path("/dev/nvidiactl").exists():
        assert default_providers() == ["CPUExecutionProvider"]
    else:
        assert default_providers()[0] == "CUDAExecutionProvider"


def test_retention_best_keeps_only_the_best_trials_file(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path}/r.db")
    study = store.create_study("r", direction="maximize")
    for number, value in enumerate([0.5, 0.7, 0.6]):
        trial = store.start_trial(study.id, {"n": number})
        store.finish_trial(trial.id, TrialState.COMPLETE, value=value)
        path = tmp_path / f"{number}.pt"
        path.write_bytes(b"w")
        record_checkpoint(store, study, trial.id, str(path), "best")
    assert [Path(a.path).name for a in store.artifacts(study.id)] == ["1.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["1.pt"]
    trial = store.start_trial(study.id, {"n": 3})
    store.finish_trial(trial.id, TrialState.COMPLETE, value=0.1)
    (tmp_path / "3.pt").write_bytes(b"w")
    record_checkpoint(store, study, trial.id, str(tmp_path / "3.pt"), "all")
    assert len(store.artifacts(study.id, kind=CHECKPOINT)) == 2
    assert [a.trial_id for a in store.artifacts(study.id, trial.id)] == [trial.id]
    record_checkpoint(store, study, trial.id, str(tmp_path / "gone.pt"), "all")  # not visible
    assert len(store.artifacts(study.id)) == 2


@pytest.mark.slow
def test_search_then_export_its_best_trial(write_config, tmp_path, ray_address, capsys) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    path = write_config(name="ship", trials=3, epochs=1)
    result = run_platform(
        "search", str(path), "--storage", url, "--address", ray_address, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    store = Store(url, create=False)
    study = store.get_study("ship")
    best = store.best_trial(study)
    (artifact,) = store.artifacts(study.id, kind=CHECKPOINT)  # retention "best"
    assert artifact.trial_id == best.id
    assert Path(artifact.path).parent == tmp_path / "checkpoints" / "ship"
    assert [p.name for p in Path(artifact.path).parent.iterdir()] == [Path(artifact.path).name]
    out = tmp_path / "ship.onnx"
    assert main(["export", "ship", "--storage", url, "--out", str(out)]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["autoplat.trial"] == str(best.number)
    assert float(meta["autoplat.value"]) == pytest.approx(best.value)


def test_export_records_the_test_images_border_brightness(exported: Path) -> None:
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert 0 < json.loads(meta["autoplat.preprocessing"])["border_mean"] < 0.25
