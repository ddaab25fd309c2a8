"""The image-captions dataset on real files the tests write: tables, splits, bad rows."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoplat.core.errors import DataError
from autoplat.plugins.architectures.clip import CLIP, evaluate_contrastive
from autoplat.plugins.datasets.captions import decode, train_tokenizer
from autoplat.plugins.datasets.image_captions import ImageCaptions, ImageCaptionsOptions

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}


def write_images(folder: Path, n: int, mode: str = "RGB") -> list[tuple[str, str, str]]:
    """``n`` PNGs of coloured squares (label = colour): rows (relative path, caption, label)."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        color = list(COLORS)[i % len(COLORS)]
        image = Image.new("RGB", (12, 12), (0, 0, 0))
        side = int(rng.integers(3, 8))
        image.paste(COLORS[color], (2, 2, 2 + side, 2 + side))
        image.paste((4 * i + 4,) * 3, (10, 10, 12, 12))  # a grey mark: every image differs
        image.convert(mode).save(folder / "img" / f"{i}.png")
        rows.append((f"img/{i}.png", f"a {color} square of side {side}", color))
    return rows


def write_csv(path: Path, rows: list[tuple[str, ...]], header=("path", "caption", "label")) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def load(path: Path, seed: int = 0, **options):
    return ImageCaptions().load(ImageCaptionsOptions(path=path, image_size=8, **options), seed)


def test_csv_layout_labels_and_prompts(tmp_path: Path) -> None:
    rows = write_images(tmp_path, 20)
    splits = load(write_csv(tmp_path / "captions.csv", rows), tokenizer="byte")
    spec = splits.spec
    assert (spec.task, spec.modality, spec.input_shape) == ("contrastive", "image-text", (3, 8, 8))
    assert spec.label_names == ("blue", "green", "red") and spec.num_classes == 3
    assert sum(len(part[0]) for part in (splits.train, splits.val, splits.test)) == 20
    assert len(splits.val[0]) == len(splits.test[0]) == 3  # 15% of 20 images, rounded
    images, tokens, labels = splits.train
    assert images.dtype == torch.float32 and 0 <= float(images.min()) <= float(images.max()) <= 1
    assert tokens.shape[1] == spec.text_length and int(tokens.max()) < spec.vocab_size
    assert splits.val[3].shape == (3, spec.text_length)
    # each label is the colour named in its caption, and the pixels show that colour
    tokenizer = train_tokenizer([], 0, kind="byte")  # needs no training: reads them back
    for image, caption, label in zip(images, decode(tokenizer, tokens), labels, strict=True):
        name = spec.label_names[label]
        assert name in caption.split()
        channel = ("red", "green", "blue").index(name)
        assert image[channel].max() == image.max()


def test_split_is_seeded_and_keeps_an_images_captions_together(tmp_path: Path) -> None:
    rows = write_images(tmp_path, 12)
    rows += [(path, f"another caption for {path}", label) for path, _, label in rows]
    table = write_csv(tmp_path / "two.csv", rows)
    a, b, c = load(table, 1), load(table, 1), load(table, 2)
    for name in ("train", "val", "test"):
        for x, y in zip(getattr(a, name), getattr(b, name), strict=True):
            assert torch.equal(x, y)
    assert not torch.equal(a.train[0], c.train[0])
    seen = [{img.numpy().tobytes() for img in part[0]} for part in (a.train, a.val, a.test)]
    assert not seen[0] & seen[1] and not seen[0] & seen[2] and not seen[1] & seen[2]
    assert all(len(part[0]) % 2 == 0 for part in (a.train, a.val, a.test))  # pairs stay


def test_jsonl_in_a_folder_unlabeled_and_grey(tmp_path: Path) -> None:
    rows = write_images(tmp_path, 9, mode="L")
    lines = [json.dumps({"path": p, "caption": c}) for p, c, _ in rows]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    splits = load(tmp_path, tokenizer="byte")
    assert splits.spec.input_shape == (1, 8, 8) and splits.spec.num_classes == 0
    assert len(splits.val) == 3 and (splits.val[2] == -1).all()  # no prompts without labels
    assert splits.spec.vocab_size == 260


@pytest.mark.parametrize("problem", ["missing", "corrupt", "empty caption"])
def test_bad_rows_name_the_file_and_line_or_are_skipped(tmp_path, caplog, problem) -> None:
    rows = write_images(tmp_path, 8)
    if problem == "missing":
        rows[4] = ("img/nope.png", "a ghost", "red")
        named = "nope.png"
    elif problem == "corrupt":
        (tmp_path / "img" / "4.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        named = "4.png"
    else:
        rows[4] = (rows[4][0], "", rows[4][2])
        named = "empty caption"
    table = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=rf"bad\.csv:6: .*{named}.*skip_bad"):
        load(table)
    with caplog.at_level(logging.WARNING):
        splits = load(table, skip_bad=True)
    assert sum(len(part[0]) for part in (splits.train, splits.val, splits.test)) == 7
    assert "skipped 1 of 8 rows" in caplog.text and named in caplog.text


def test_table_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "none.csv")
    with pytest.raises(DataError, match="holds no captions table"):
        load(tmp_path)
    rows = write_images(tmp_path, 4)
    with pytest.raises(DataError, match="lacks column.*caption"):
        load(write_csv(tmp_path / "cols.csv", rows, header=("path", "text", "label")))
    (tmp_path / "broken.jsonl").write_text('{"path": "img/0.png"}\n')
    with pytest.raises(DataError, match=r"broken\.jsonl:1: missing key 'caption'"):
        load(tmp_path / "broken.jsonl")
    with pytest.raises(DataError, match="need at least 3"):
        load(write_csv(tmp_path / "two.csv", rows[:2]))


def test_clip_evaluates_on_image_captions(tmp_path: Path) -> None:
    splits = load(write_csv(tmp_path / "captions.csv", write_images(tmp_path, 20)))
    torch.manual_seed(0)
    model = CLIP().build({"image_tower": "cnn", "image_depth": 2, "image_width": 8}, splits.spec)
    metrics = evaluate_contrastive(model, splits.val, torch.device("cpu"))
    assert {"loss", "recall_at_1", "recall_at_5", "zeroshot_accuracy"} <= set(metrics)
    assert metrics["recall_at_5"] == 1.0  # only 3 val pairs
