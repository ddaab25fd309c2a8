"""`platform search` end to end: the config keys a user sets, tpe and bohb by name, export
and predict with their options, show --top; and one small real search per architecture
family that had none (dino, audio, mnist5k, image-folder, video-captions, spos). One Ray
for the module (conftest's ``ray_address``)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from autoplat.cli import main
from autoplat.core.config import load_config
from autoplat.core.registry import get_registry
from autoplat.core.store import Store, StudyState, TrialState
from autoplat.core.study import run_study
from autoplat.plugins.datasets.digits import Digits
from autoplat.plugins.datasets.splits import SplitOptions
from autoplat.plugins.datasets.video import render_moving_shapes
from autoplat.testing import run_platform

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

KEYS = """
[study]
name = "keys"
trials = 3
seed = 0
storage = "sqlite:///{root}/own.db"
checkpoints = "all"
checkpoint_dir = "{root}/weights"

[architecture]
name = "vit"

[dataset]
name = "digits"

[space]
depth = [1]
width = [16, 32]
heads = [2]
mlp_ratio = [2]
patch_size = [4]
dropout = 0.0
lr = {{ low = 1e-3, high = 5e-3, log = true }}
batch_size = 128
epochs = 2

[strategy]
name = "tpe"

[resources]
cpus_per_trial = 1
gpus_per_trial = 0
max_concurrent = 1
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory, ray_address) -> dict:
    """`platform search` of KEYS: no --storage (the config's), tpe by name."""
    root = tmp_path_factory.mktemp("keys")
    config = root / "keys.toml"
    config.write_text(KEYS.format(root=root))
    result = run_platform("search", str(config), "--address", ray_address, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    return {"root": root, "url": f"sqlite:///{root}/own.db"}


def test_config_keys_storage_checkpoints_and_one_trial_at_a_time(searched) -> None:
    root, store = searched["root"], Store(searched["url"])
    study = store.get_study("keys")
    assert study.state == StudyState.FINISHED
    assert json.loads(study.config)["strategy"]["name"] == "tpe"
    trials = store.trials(study.id)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert not (root / "runs").exists()  # nothing went to the default store
    weights = sorted(p.name for p in (root / "weights").rglob("*.pt"))
    assert len(weights) == 3, weights  # checkpoints = "all", in checkpoint_dir
    assert not (root / "checkpoints").exists()
    spans = sorted((t.started_at, t.ended_at) for t in trials)  # max_concurrent = 1
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``platform ARGS`` in this process (the search above ran as a subprocess)."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_show_top_lists_only_the_best(searched, capsys) -> None:
    """--top N: the leaderboard's first N rows (rank, trial), best first."""
    code, shown, _ = cli(capsys, "show", "keys", "--storage", searched["url"], "--top", "2")
    assert code == 0
    rows = re.findall(r"^\W*(\d+)\W+(\d+)\W", shown, re.M)
    everything = json.loads(cli(capsys, "show", "keys", "--storage", searched["url"], "--json")[1])
    best = sorted(everything["trials"], key=lambda t: -t["value"])
    assert rows == [("1", str(best[0]["number"])), ("2", str(best[1]["number"]))]


def test_export_opset_and_tolerance(searched, capsys) -> None:
    root, url = searched["root"], searched["url"]
    out = root / "m18.onnx"
    code, done, err = cli(capsys, "export", "keys", "--storage", url, "--out", str(out),
                          "--opset", "18", "--tolerance", "1e-3", "--json")  # fmt: skip
    assert code == 0, err
    assert onnx.load(str(out)).opset_import[0].version == 18
    gap = json.loads(done)["files"][0]["max_abs_diff"]
    assert 0 < gap < 1e-3  # float32 torch and onnxruntime are close, never bit-exact
    strict = root / "strict.onnx"
    code, _, err = cli(capsys, "export", "keys", "--storage", url, "--out", str(strict),
                       "--tolerance", f"{gap / 100:g}")  # fmt: skip
    assert code == 2 and f"(tolerance {gap / 100:g})" in err
    assert not strict.exists()


def test_predict_batch_size_invert_and_out(searched, capsys) -> None:
    """Dark-on-light PNGs with --invert predict as the light-on-dark ones do, in batches
    of 2 or the default; --out saves the logits."""
    root, url = searched["root"], searched["url"]
    model = root / "model.onnx"
    assert cli(capsys, "export", "keys", "--storage", url, "--out", str(model))[0] == 0
    x = Digits().load(SplitOptions(), seed=0).test[0][:5, 0].numpy()
    normal, inverted = [], []
    for i, image in enumerate((x * 255).round().astype(np.uint8)):
        normal.append(str(root / f"n{i}.png"))
        inverted.append(str(root / f"i{i}.png"))
        Image.fromarray(image).save(normal[-1])
        Image.fromarray(255 - image).save(inverted[-1])
    assert cli(capsys, "predict", str(model), *normal, "--out", str(root / "a.npy"))[0] == 0
    code, _, err = cli(capsys, "predict", str(model), *inverted, "--invert",
                       "--batch-size", "2", "--out", str(root / "b.npy"))  # fmt: skip
    assert code == 0, err
    a, b = np.load(root / "a.npy"), np.load(root / "b.npy")
    assert a.shape == (5, 10) and np.isfinite(a).all()
    np.testing.assert_allclose(b, a, atol=1e-5)
    code, _, _ = cli(capsys, "predict", str(model), *inverted, "--out", str(root / "c.npy"))
    assert code == 0 and np.abs(np.load(root / "c.npy") - a).max() > 1e-3  # without --invert


def test_bohb_by_name(write_config, tmp_path, ray_address) -> None:
    path = write_config(name="bohb-by-name", trials=4, epochs=3, strategy="bohb")
    store = Store(f"sqlite:///{tmp_path}/s.db")
    resolved = load_config(path, get_registry())
    assert resolved.config.scheduler.name == "hyperband_bohb"  # its own scheduler
    run_study(resolved, store, address=ray_address)
    study = store.get_study("bohb-by-name")
    trials = store.trials(study.id)
    assert study.state == StudyState.FINISHED and len(trials) == 4
    assert any(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.params_dict["lr"] for t in trials}) == 4  # its own proposals


# -- one small search per architecture family ----------------------------------------
def write_image_folder(root: Path) -> Path:
    """Two classes of 8x8 grey PNGs: a bright top half, or a bright bottom half."""
    rng = np.random.default_rng(0)
    for label, rows in (("top", slice(0, 4)), ("bottom", slice(4, 8))):
        (root / label).mkdir(parents=True)
        for i in range(30):
            pixels = rng.integers(0, 60, (8, 8))
            pixels[rows] += 150
            Image.fromarray(pixels.astype(np.uint8), "L").save(root / label / f"{i}.png")
    return root


def write_video_captions(root: Path) -> Path:
    """12 moving-shapes videos as .npy files and a JSONL of their captions."""
    videos, captions, spans = render_moving_shapes(12, 8, 16, 2, seed=0)
    lines = []
    for i, (video, texts, video_spans) in enumerate(zip(videos, captions, spans, strict=True)):
        np.save(root / f"v{i}.npy", video.transpose(0, 2, 3, 1))  # (T, H, W, C)
        for text, (start, end) in zip(texts, video_spans, strict=True):
            row = {"video": f"v{i}.npy", "caption": text, "start": float(start)}
            lines.append(json.dumps({**row, "end": float(end)}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root / "captions.jsonl"


FAMILIES = {
    "dino": ("dino", "digits", "", "depth = 1\nwidth = 32\nheads = 2\npatch_size = 4\n"
             "prototypes = 64\nbatch_size = 64\nepochs = 1\nwarmup_epochs = 0\n",
             "val_knn_accuracy"),
    "audio": ("audio", "sound-events", "n_train = 64\nn_val = 32\nn_test = 32\n",
              'encoder = "cnn"\ndepth = 2\nwidth = 16\nbatch_size = 32\nepochs = 1\n'
              "warmup_epochs = 0\n", "val_accuracy"),
    "mnist5k": ("vit", "mnist5k", "", "depth = 1\nwidth = 16\nheads = 2\npatch_size = 7\n"
                "batch_size = 256\nepochs = 1\n", "val_accuracy"),
    "image-folder": ("vit", "image-folder", 'path = "{data}"\nsize = 8\nchannels = 1\n',
                     "depth = 1\nwidth = 16\nheads = 2\npatch_size = 4\nepochs = 1\n",
                     "val_accuracy"),
    "video-captions": ("video-text", "video-captions",
                       'path = "{data}"\nframes = 4\nsize = 16\nfps = 1.0\n'
                       "val_fraction = 0.25\ntest_fraction = 0.25\n",
                       "width = 32\nheads = 2\ntemporal_depth = 1\ntext_depth = 1\n"
                       "embed_dim = 32\nframe_channels = 8\nbatch_size = 4\nepochs = 1\n"
                       "warmup_epochs = 0\nclip_max_frames = 4\n", "val_recall_at_1"),
}  # fmt: skip


@pytest.mark.parametrize("family", [*FAMILIES, "spos"])
def test_one_small_search_per_family(family, tmp_path, ray_address) -> None:
    if family == "spos":
        body = (
            '[architecture]\nname = "nb201"\n[dataset]\nname = "digits"\n'
            "[space]\nepochs = 1\nlr = 0.01\n"
            '[strategy]\nname = "spos"\nepochs = 1\ntop_k = 1\npopulation = 4\nparents = 2\n'
            "mutations = 2\ncrossovers = 2\niterations = 2\neval_cells = 2\n"
        )
        metric = "val_accuracy"
    else:
        arch, dataset, options, space, metric = FAMILIES[family]
        data = ""
        if family == "image-folder":
            data = write_image_folder(tmp_path / "images")
        elif family == "video-captions":
            data = write_video_captions(tmp_path)
        body = (
            f'[architecture]\nname = "{arch}"\n[dataset]\nname = "{dataset}"\n'
            f"{options.format(data=data)}[space]\n{space}"
        )
    config = tmp_path / "c.toml"
    config.write_text(
        f'[study]\nname = "{family}"\ntrials = 1\nseed = 0\nmetric = "{metric}"\n'
        f"{body}[resources]\ncpus_per_trial = 1\n"
    )
    store = Store(f"sqlite:///{tmp_path}/s.db")
    run_study(load_config(config, get_registry()), store, address=ray_address)
    study = store.get_study(family)
    trials = store.trials(study.id)
    assert study.state == StudyState.FINISHED
    assert trials and all(t.state == TrialState.COMPLETE for t in trials), [t.error for t in trials]
    values = [t.value for t in trials if t.value is not None]
    assert values and all(math.isfinite(v) for v in values)
