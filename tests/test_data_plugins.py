"""The image-folder and csv datasets on real files the tests write: layout, splits,
preprocessing, every user error, and an MLP learning from them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from autoplat.core.config import load_config
from autoplat.core.errors import ConfigError, DataError
from autoplat.core.interfaces import Splits
from autoplat.core.predict import IMAGE_SUFFIXES as PREDICT_SUFFIXES
from autoplat.core.registry import get_registry
from autoplat.core.training import train_classification
from autoplat.plugins.architectures.mlp import MLP
from autoplat.plugins.datasets.csv_table import CsvOptions, CsvTable, read_table
from autoplat.plugins.datasets.image_folder import (
    IMAGE_SUFFIXES,
    ImageFolder,
    ImageFolderOptions,
    _read,
)
from autoplat.plugins.datasets.splits import SplitOptions, min_per_class, stratified_splits
from autoplat.testing import DatasetContract, run_platform

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPES = ("square", "circle", "cross")  # folder names; sorted: circle, cross, square


# -- writing real files ------------------------------------------------------------------
def draw(kind: str, rng: np.random.Generator, mode: str = "RGB", side: int = 20) -> Image.Image:
    """A bright shape near the centre of a dark noisy image, colours and size random."""
    grey = mode == "L"
    background = int(rng.integers(0, 60)) if grey else tuple(rng.integers(0, 60, 3).tolist())
    ink = int(rng.integers(180, 256)) if grey else tuple(rng.integers(150, 256, 3).tolist())
    image = Image.new(mode, (side, side), background)
    pen = ImageDraw.Draw(image)
    r = int(rng.integers(5, 8))
    cx, cy = (side // 2 + rng.integers(-2, 3, 2)).tolist()
    if kind == "square":
        pen.rectangle([cx - r, cy - r, cx + r, cy + r], fill=ink)
    elif kind == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=ink)
    else:
        pen.line([cx - r, cy, cx + r, cy], fill=ink, width=3)
        pen.line([cx, cy - r, cx, cy + r], fill=ink, width=3)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, np.asarray(image).shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode)


def write_folder(
    root: Path, per_class: int = 60, mode: str = "RGB", classes: tuple[str, ...] = SHAPES
) -> Path:
    """``root/<shape>/<i>.png`` plus files the dataset must skip; returns ``root``."""
    rng = np.random.default_rng(0)
    for kind in classes:
        folder = root / kind
        (folder / "more").mkdir(parents=True)
        for i in range(per_class):
            where = folder / "more" if i % 5 == 0 else folder  # nested folders count too
            draw(kind, rng, mode).save(where / f"{i:03d}.png")
        (folder / "notes.txt").write_text("not an image")
        (folder / ".hidden.png").write_bytes(b"skipped: hidden")
    (root / ".cache").mkdir()  # a hidden folder is no class
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("shapes"))


CLASS_NAMES = ("setosa", "versicolor", "virginica")


def write_csv(path: Path, rows: list[list[object]], header: list[str] | None = None) -> Path:
    header = header or ["petal", "sepal", "weight_g", "noise", "label"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def blob_rows(per_class: int = 60, seed: int = 0) -> list[list[object]]:
    """Three Gaussian blobs: two informative features on very different scales, a noise one."""
    rng = np.random.default_rng(seed)
    rows: list[list[object]] = []
    for k, name in enumerate(CLASS_NAMES):
        for _ in range(per_class):
            petal, sepal = rng.normal([k * 3.0, (k % 2) * 3.0], 1.0)
            weight = 1000 * (1 + k) + rng.normal(0, 600)  # grams: a large scale
            rows.append([round(petal, 5), round(sepal, 5), round(weight, 3), rng.normal(), name])
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("csv") / "flowers.csv", blob_rows())


def quick_train(splits: Splits, epochs: int, lr: float) -> dict[str, float]:
    torch.manual_seed(0)
    model = MLP().build({"hidden": 64, "depth": 1, "dropout": 0.0}, splits.spec)
    params = {"epochs": epochs, "lr": lr, "batch_size": 16, "weight_decay": 0.0}
    return train_classification(model, splits, params, lambda epoch, metrics: None, seed=0)


# -- the conformance kit -------------------------------------------------------------------
class TestImageFolderContract(DatasetContract):
    @pytest.fixture
    def dataset(self) -> ImageFolder:
        return ImageFolder()

    @pytest.fixture
    def options(self, folder: Path) -> ImageFolderOptions:
        return ImageFolderOptions(path=folder, size=12)


class TestCsvContract(DatasetContract):
    @pytest.fixture
    def dataset(self) -> CsvTable:
        return CsvTable()

    @pytest.fixture
    def options(self, table: Path) -> CsvOptions:
        return CsvOptions(path=table)


# -- image folder --------------------------------------------------------------------------
def test_image_folder_labels_shapes_and_pixels(folder: Path) -> None:
    splits = ImageFolder().load(ImageFolderOptions(path=folder), seed=0)
    spec = splits.spec
    assert spec.label_names == ("circle", "cross", "square")
    assert (spec.modality, spec.input_shape, spec.num_classes) == ("image", (3, 32, 32), 3)
    parts = (splits.train, splits.val, splits.test)
    assert sum(len(y) for _, y in parts) == 3 * 60  # the .txt and hidden files are skipped
    x = torch.cat([x for x, _ in parts])
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9


def test_image_folder_pixels_match_the_file(tmp_path: Path) -> None:
    colours = {"blue": (10, 20, 250), "red": (240, 30, 5)}
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        for i in range(7):
            Image.new("RGB", (6, 4), (colour[0], colour[1] + i, colour[2])).save(
                tmp_path / name / f"{i}.png"
            )
    splits = ImageFolder().load(ImageFolderOptions(path=tmp_path, size=3), seed=0)
    for x, y in (splits.train, splits.val, splits.test):
        for image, label in zip(x, y, strict=True):
            r, g, b = colours[splits.spec.label_names[label]]
            assert image.shape == (3, 3, 3)
            assert image[0].unique().tolist() == [pytest.approx(r / 255)]
            assert image[2].unique().tolist() == [pytest.approx(b / 255)]
            assert g / 255 <= image[1, 0, 0] <= (g + 6) / 255


@pytest.mark.parametrize(
    ("mode", "channels", "expected"),
    [("L", None, 1), ("RGB", None, 3), ("RGB", 1, 1), ("L", 3, 3)],
)
def test_image_folder_channels(tmp_path: Path, mode: str, channels: int | None, expected: int):
    write_folder(tmp_path, per_class=7, mode=mode, classes=SHAPES[:2])
    options = ImageFolderOptions(path=tmp_path, size=8, channels=channels)
    splits = ImageFolder().load(options, seed=0)
    assert splits.spec.input_shape == (expected, 8, 8)
    assert splits.train[0].shape[1:] == (expected, 8, 8)


def test_image_folder_splits_are_seeded_and_stratified(folder: Path) -> None:
    options = ImageFolderOptions(path=folder, size=8, val_fraction=0.25, test_fraction=0.25)
    first, again, other = (ImageFolder().load(options, seed) for seed in (3, 3, 4))
    assert torch.equal(first.test[0], again.test[0]) and torch.equal(first.val[1], again.val[1])
    assert not torch.equal(first.test[0], other.test[0])
    for (_, y), share in zip((first.train, first.val, first.test), (30, 15, 15), strict=True):
        assert torch.bincount(y, minlength=3).tolist() == [share] * 3


def test_image_suffixes_are_those_predict_reads() -> None:
    assert IMAGE_SUFFIXES == PREDICT_SUFFIXES


def test_min_per_class() -> None:
    assert min_per_class(SplitOptions()) == 7  # 1 / 0.15, rounded up
    assert min_per_class(SplitOptions(val_fraction=0.4, test_fraction=0.45)) == 14  # 2 / 0.15


def test_relative_path_is_fixed_where_options_are_read(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert ImageFolderOptions(path="data/images").path == tmp_path / "data" / "images"
    assert CsvOptions(path="t.csv").path == tmp_path / "t.csv"


def test_mlp_learns_the_shapes(folder: Path) -> None:
    splits = ImageFolder().load(ImageFolderOptions(path=folder, size=16, channels=1), seed=0)
    metrics = quick_train(splits, epochs=40, lr=3e-3)
    assert metrics["val_accuracy"] >= 0.8 and metrics["test_accuracy"] >= 0.8  # chance: 1/3


def _corrupt(root: Path) -> None:
    write_folder(root, per_class=7, classes=SHAPES[:2])
    bad = root / "circle" / "003.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated


def _loose(root: Path) -> None:
    root.mkdir(exist_ok=True)
    draw("circle", np.random.default_rng(0)).save(root / "a.png")


IMAGE_ERRORS = [
    ("missing", lambda root: None, ["does not exist", "[dataset] path"]),
    (
        "a file",
        lambda root: root.write_text("x"),
        ["is not a folder", "root/<class name>/<image files>"],
    ),
    ("empty", lambda root: root.mkdir(), ["has no class folders", "named after the class"]),
    ("loose images", _loose, ["has no class folders but 1 image files directly inside"]),
    (
        "class without images",
        lambda root: (write_folder(root, 7, classes=SHAPES[:2]), (root / "zebra").mkdir()),
        ["zebra holds no images", ".png", "add images or remove the folder"],
    ),
    ("corrupt image", _corrupt, ["circle/003.png", "cannot read the image", "replace the file"]),
    (
        "one class",
        lambda root: write_folder(root, 7, classes=("cross",)),
        ["only the class folder 'cross'", "at least 2 classes"],
    ),
    (
        "small class",
        lambda root: write_folder(root, 6, classes=SHAPES[:2]),
        ["circle has 6 images", "at least 7", "add images"],
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "fragments"), IMAGE_ERRORS, ids=[e[0] for e in IMAGE_ERRORS]
)
def test_image_folder_errors(tmp_path: Path, case: str, make, fragments: list[str]) -> None:
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DataError) as info:
        ImageFolder().load(ImageFolderOptions(path=root), seed=0)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert str(root) in message


def test_image_folder_train_sources_are_the_files(folder: Path) -> None:
    options = ImageFolderOptions(path=folder, size=12)
    splits = ImageFolder().load(options, seed=0)
    x, y = splits.train
    assert len(splits.train_sources) == len(y)
    for image, label, source in zip(x[:20], y[:20], splits.train_sources[:20], strict=True):
        path = Path(source)
        assert path.relative_to(folder).parts[0] == splits.spec.label_names[label]  # class
        assert torch.equal(image, torch.from_numpy(_read(path, 3, 12)))


# -- csv ------------------------------------------------------------------------------------
def test_csv_train_sources_name_file_and_line(table: Path) -> None:
    splits = CsvTable().load(CsvOptions(path=table), seed=0)
    lines = table.read_text().splitlines()
    names = splits.spec.label_names
    for label, source in zip(splits.train[1], splits.train_sources, strict=True):
        file, line = source.rsplit(":", 1)
        assert file == str(table) and lines[int(line) - 1].endswith("," + names[label])


def test_csv_labels_features_and_standardisation(table: Path) -> None:
    splits = CsvTable().load(CsvOptions(path=table), seed=0)
    spec = splits.spec
    assert spec.label_names == CLASS_NAMES
    assert (spec.modality, spec.input_shape, spec.num_classes) == ("tabular", (4,), 3)
    x, y = splits.train
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(x.std(0), torch.ones(4), atol=1e-5)

    # rows in file order, then the same split of row numbers: val and test are scaled
    # with the train split's mean and std
    raw, labels, _, _ = read_table(CsvOptions(path=table))
    rows = blob_rows()
    assert np.allclose(raw, [r[:4] for r in rows], atol=1e-3)
    assert [spec.label_names[i] for i in labels] == [r[4] for r in rows]
    ids = stratified_splits(np.arange(len(rows))[:, None], labels, CsvOptions(path=table), 0, spec)
    train_rows = raw[ids.train[0][:, 0]]
    mean, std = train_rows.mean(0), train_rows.std(0, ddof=1)
    for (x_part, y_part), (id_part, _) in zip(
        (splits.train, splits.val, splits.test), (ids.train, ids.val, ids.test), strict=True
    ):
        expected = (raw[id_part[:, 0]] - mean) / std
        assert np.allclose(x_part.numpy(), expected, atol=1e-5)
        assert torch.equal(y_part, torch.from_numpy(labels[id_part[:, 0]]))


def test_csv_integer_labels_sort_numerically_and_features_pick_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [[f"{rng.normal():.6f}", f"{rng.normal():.6f}", label] for label in [2, 10, 9] * 8]
    path = write_csv(tmp_path / "t.csv", rows, header=["a", "b", "class"])
    options = CsvOptions(path=path, label="class", features=["b"])
    splits = CsvTable().load(options, seed=0)
    assert splits.spec.label_names == ("2", "9", "10")
    assert splits.spec.input_shape == (1,)
    raw, labels, _, _ = read_table(options)
    assert np.allclose(raw[:, 0], [float(r[1]) for r in rows], atol=1e-6)
    assert labels[:3].tolist() == [0, 2, 1]


def test_csv_skips_blank_lines_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("x,label\n1,a\n\n2,b\n,a\n")
    with pytest.raises(DataError, match=r"t\.csv:5: column 'x': missing value"):
        CsvTable().load(CsvOptions(path=path), seed=0)


def test_csv_splits_are_seeded_and_stratified(table: Path) -> None:
    options = CsvOptions(path=table, val_fraction=0.2, test_fraction=0.2)
    first, again, other = (CsvTable().load(options, seed) for seed in (5, 5, 6))
    assert torch.equal(first.train[0], again.train[0]) and torch.equal(first.test[1], again.test[1])
    assert not torch.equal(first.test[0], other.test[0])
    for (_, y), share in zip((first.train, first.val, first.test), (36, 12, 12), strict=True):
        assert torch.bincount(y, minlength=3).tolist() == [share] * 3


def test_mlp_learns_the_csv(table: Path) -> None:
    splits = CsvTable().load(CsvOptions(path=table), seed=0)
    metrics = quick_train(splits, epochs=30, lr=1e-2)
    assert metrics["val_accuracy"] >= 0.85 and metrics["test_accuracy"] >= 0.85  # chance: 1/3


def _header_and(*lines: str) -> str:
    return "\n".join(["a,b,label", *lines]) + "\n"


GOOD = [f"{i},{i * 2},{'xy'[i % 2]}" for i in range(14)]

CSV_ERRORS = [
    ("missing", None, {}, ["does not exist", "[dataset] path"]),
    ("empty", "", {}, ["is empty", "name the columns"]),
    ("header only", "a,b,label\n", {}, ["header but no data rows"]),
    (
        "no label column",
        _header_and(*GOOD),
        {"label": "lable"},
        ["no column 'lable'", "did you mean 'label'?", "The columns are: a, b, label"],
    ),
    (
        "unknown feature",
        _header_and(*GOOD),
        {"features": ["a", "bb"]},
        ["no column 'bb'", "[dataset] features", "did you mean 'b'?"],
    ),
    ("label as feature", _header_and(*GOOD), {"features": ["a", "label"]}, ["lists the label"]),
    (
        "not a number",
        _header_and(*GOOD[:5], "5,ten,y", *GOOD[6:]),
        {},
        [":7: column 'b'", "'ten' is not a finite float32 number", "features = [...]"],
    ),
    ("infinite", _header_and(*GOOD[:2], "inf,1,x", *GOOD[3:]), {}, [":4: column 'a'", "'inf'"]),
    ("too large", _header_and(*GOOD[:2], "1,1e39,x", *GOOD[3:]), {}, [":4: column 'b'", "float32"]),
    (
        "only the label",
        "label\n" + "\n".join("xy"[i % 2] for i in range(14)),
        {},
        ["no columns besides"],
    ),
    (
        "missing feature",
        _header_and(*GOOD[:3], "NA,6,y", *GOOD[4:]),
        {},
        [":5: column 'a': missing value", "fill it in or delete the row"],
    ),
    (
        "missing label",
        _header_and(*GOOD[:8], "8,16,", *GOOD[9:]),
        {},
        [":10: column 'label': the label is missing"],
    ),
    ("ragged row", _header_and(*GOOD[:2], "1,2", *GOOD[3:]), {}, [":4: 2 fields", "header has 3"]),
    ("unnamed column", "a,,label\n" + "\n".join(GOOD) + "\n", {}, [":1: column 2 has no name"]),
    ("repeated column", "a,a,label\n" + "\n".join(GOOD) + "\n", {}, [":1: repeated", "['a']"]),
    (
        "one class",
        _header_and(*(f"{i},{i},z" for i in range(10))),
        {},
        ["every row has the label 'z'", "at least 2 classes"],
    ),
    (
        "small class",
        _header_and(*GOOD[:12], "0.5,1,q"),
        {},
        ["class 'q' has 1 rows", "at least 7", "add rows"],
    ),
    ("not utf-8", b"a,label\n\xff\xfe,1\n", {}, ["cannot read it as a UTF-8 CSV file"]),
]


@pytest.mark.parametrize(
    ("case", "text", "extra", "fragments"), CSV_ERRORS, ids=[e[0] for e in CSV_ERRORS]
)
def test_csv_errors(tmp_path: Path, case: str, text, extra: dict, fragments: list[str]) -> None:
    path = tmp_path / "data.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(DataError) as info:
        CsvTable().load(CsvOptions(path=path, **extra), seed=0)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    if case != "label as feature":
        assert str(path) in message


def test_csv_path_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder, not a file"):
        CsvTable().load(CsvOptions(path=tmp_path), seed=0)


# -- configs -----------------------------------------------------------------------------
CONFIG = """
[study]
name = "tabular"

[architecture]
name = "{arch}"

[dataset]
name = "csv"
path = "{path}"
label = "label"
"""


def test_config_pairs_mlp_with_csv_and_refuses_vit(tmp_path: Path, table: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(arch="mlp", path=table))
    resolved = load_config(config, get_registry())
    assert resolved.dataset.name == "csv" and resolved.architecture.name == "mlp"
    assert resolved.dataset_options.path == table
    assert {"hidden", "depth", "dropout", "lr"} <= set(resolved.space.dims)

    config.write_text(CONFIG.format(arch="vit", path=table))
    with pytest.raises(
        ConfigError, match=r"dataset 'csv' \(tabular.*cannot feed architecture 'vit'"
    ):
        load_config(config, get_registry())


@pytest.mark.slow
def test_csv_model_exports_and_predicts_raw_rows_by_class_name(
    tmp_path: Path, table: Path, ray_address
) -> None:
    config = tmp_path / "flowers.toml"
    config.write_text(
        '[study]\nname = "flowers"\ntrials = 1\n[architecture]\nname = "mlp"\n'
        f'[dataset]\nname = "csv"\npath = "{table}"\n'
        '[space]\nhidden = 64\ndepth = 1\ndropout = 0.0\nactivation = "relu"\nlr = 0.01\n'
        "weight_decay = 0.0\nbatch_size = 32\nepochs = 30\n"
    )
    url = f"sqlite:///{tmp_path / 'f.db'}"
    result = run_platform("search", str(config), "--storage", url, "--address", ray_address)
    assert result.returncode == 0, result.stderr
    model = tmp_path / "flowers.onnx"
    assert run_platform("export", "flowers", "--storage", url, "--out", str(model)).returncode == 0
    raw = tmp_path / "raw.csv"  # unscaled features, a header and the label column (text)
    rows = blob_rows(per_class=20, seed=5)
    write_csv(raw, rows)
    predicted = run_platform("predict", str(model), str(raw), "--json")
    assert predicted.returncode == 0, predicted.stderr
    labels = [p["label"] for p in json.loads(predicted.stdout)]
    truth = [row[-1] for row in rows]
    assert set(labels) <= set(CLASS_NAMES)
    assert sum(a == b for a, b in zip(labels, truth, strict=True)) / len(truth) > 0.85
