"""Every bad config gives one clear message naming the file and key, exit 2, no traceback."""

from __future__ import annotations

import pytest

from autoplat.cli import main
from autoplat.core.config import line_of, load_config
from autoplat.core.errors import ConfigError
from autoplat.core.registry import get_registry
from autoplat.core.store import Store
from autoplat.testing import run_platform

BAD = [
    # (what to change, expected message fragments)
    (("[study]\nname", "[study]\nnmae"), ["study.nmae", "did you mean 'name'"]),
    (("trials = 2", 'trials = "many"'), ["study.trials", "valid integer", "'many'"]),
    (("trials = 2", "trials = 0"), ["study.trials", "greater than or equal to 1"]),
    (("cpus_per_trial = 1", "cpus_per_trial = -1"), ["resources.cpus_per_trial", "greater than 0"]),
    (
        ('name = "vit"', 'name = "vitt"'),
        [
            "architecture.name",
            "unknown architecture 'vitt'",
            "did you mean 'vit'",
            "Available: ",
        ],
    ),
    (
        ('name = "digits"', 'name = "digitz"'),
        [
            "dataset.name",
            "unknown dataset 'digitz'",
            "did you mean 'digits'",
            "Available: ",
        ],
    ),
    (
        ('name = "random"', 'name = "evolve"'),
        ["strategy.name", "unknown strategy 'evolve'", "evolution"],
    ),
    (("depth = [1]", "dpeth = [1]"), ["space.dpeth", "did you mean 'depth'"]),
    (("epochs = 2", "epochs = { low = 5, high = 1 }"), ["space.epochs", "must be below"]),
    (("[strategy]", "[strategy]\npopulation = 8"), ["strategy.population", "unknown key"]),
    (("seed = 0", 'seed = 0\nmetric = "val_acc"'), ["study.metric", "did you mean 'val_accuracy'"]),
    (
        ("[resources]", '[scheduler]\nname = "asha2"\n\n[resources]'),
        ["scheduler.name", "'fifo', 'asha', 'hyperband', 'hyperband_bohb' or 'median'"],
    ),
    (
        ('[dataset]\nname = "digits"', '[dataset]\nname = "digits"\nval_fraction = 0.9'),
        ["dataset.val_fraction", "less than 0.5"],
    ),
    (("[study]", "[study\n"), ["invalid TOML", "line"]),
    (
        ("epochs = 2", "epochs = 2\ndataset.val_fractoin = [0.1, 0.2]"),
        ["space.dataset.val_fractoin", "did you mean 'val_fraction'"],
    ),
    (
        ("epochs = 2", "epochs = 2\ndataset.val_fraction = [0.1, 0.7]"),
        ["space.dataset.val_fraction", "value 0.7 is not valid", "less than 0.5"],
    ),
    (("epochs = 2", "epochs = 2\ndataset = 3"), ["space.dataset", "table of dataset options"]),
    (
        ("heads = [2]", "heads = [3]"),
        ["space:", "can build architecture 'vit'", "is not divisible by heads 3"],
    ),
]


@pytest.mark.parametrize(("change", "fragments"), BAD, ids=[f[0] for _, f in BAD])
def test_bad_config_gives_clear_error(write_config, capsys, tmp_path, change, fragments):
    path = write_config()
    path.write_text(path.read_text().replace(*change, 1))
    db = tmp_path / "keep.db"
    Store(f"sqlite:///{db}").create_study("kept")
    code = main(["search", str(path), "--storage", f"sqlite:///{db}"])
    error = capsys.readouterr().err
    assert code == 2
    assert str(path) in error
    for fragment in fragments:
        assert fragment in " ".join(error.split()), error
    assert "Traceback" not in error
    assert [s.name for s in Store(f"sqlite:///{db}").studies()] == ["kept"]  # nothing lost


def test_error_names_the_line(write_config):
    path = write_config()
    text = path.read_text().replace("dropout = 0.0", "dropout = 0.0\nbogus = 1")
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, get_registry())
    line = text.splitlines().index("bogus = 1") + 1
    assert f"{path}:{line}: space.bogus" in str(info.value)


def test_architecture_dataset_mismatch_names_both(write_config, capsys):
    from autoplat.core.interfaces import Dataset

    class Sentences(Dataset):
        name = "sentences-test"
        tasks = ("classification",)
        modality = "text"

        def load(self, options, seed):
            raise AssertionError("never loaded")

    registry = get_registry()
    registry.items["datasets"][Sentences.name] = Sentences()
    try:
        path = write_config()
        path.write_text(path.read_text().replace('name = "digits"', f'name = "{Sentences.name}"'))
        assert main(["search", str(path)]) == 2
        error = " ".join(capsys.readouterr().err.split())
        assert "dataset.name" in error
        assert "dataset 'sentences-test' (text" in error
        assert "architecture 'vit' (classification on image)" in error
    finally:
        del registry.items["datasets"][Sentences.name]


@pytest.mark.slow
def test_missing_file_and_cli_subprocess_exit_2(tmp_path):
    result = run_platform("search", str(tmp_path / "nope.toml"), timeout=120)
    assert result.returncode == 2
    assert "config file" in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_line_of_finds_nested_keys():
    text = "[study]\nname = 'a'\n\n[strategy]\nname = 'b'\npopulation = 3\n"
    assert line_of(text, ("strategy", "population")) == 6
    assert line_of(text, ("study", "name")) == 2
    assert line_of(text, ("strategy",)) == 4
    assert line_of(text, ("nope", "x")) is None


def test_good_config_resolves(write_config):
    resolved = load_config(write_config(strategy="evolution"), get_registry())
    assert resolved.direction == "maximize"
    assert resolved.space.fixed()["epochs"] == 2
    assert resolved.space.dims["width"].choices == (16, 32)
    assert "heads" in resolved.space.dims


@pytest.mark.slow
def test_unreachable_cluster_and_bad_storage_exit_2(write_config, tmp_path, capsys):
    db = tmp_path / "kept.db"
    Store(f"sqlite:///{db}").create_study("kept")
    path = write_config()
    result = run_platform(
        "search", str(path), "--storage", f"sqlite:///{db}", "--address", "127.0.0.1:1", timeout=120
    )
    assert result.returncode == 2
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in result.stderr
    assert "Traceback" not in result.stderr
    assert [s.name for s in Store(f"sqlite:///{db}").studies()] == ["kept"]

    not_db = tmp_path / "notes.txt"
    not_db.write_text("my notes\n")
    assert main(["search", str(path), "--storage", f"sqlite:///{not_db}"]) == 2
    assert "cannot open the results store" in capsys.readouterr().err
    assert not_db.read_text() == "my notes\n"
    assert main(["show", "nope", "--storage", f"sqlite:///{db}"]) == 2
    assert "no study named 'nope'" in capsys.readouterr().err
