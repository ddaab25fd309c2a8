"""examples/plugin-template as a user gets it: installed, listed, searched with, scaffolded."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoplat.core.errors import AutoplatError
from autoplat.core.scaffold import KINDS, MARKER, new_plugin
from autoplat.core.store import Store
from autoplat.testing import run_platform

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "plugin-template"
JUNK = {"__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}
REGISTERED = {
    "architectures": ["example-mlp"],
    "search_spaces": ["example-mlp"],
    "datasets": ["example-shapes"],
    "strategies": ["example-hill-climb"],
    "acquisitions": ["example-margin"],
    "scorers": ["example-word-count"],
}


def _installed() -> bool:
    try:
        return md.distribution("autoplat-example") is not None
    except md.PackageNotFoundError:
        return False


needs_template = pytest.mark.skipif(
    not _installed(),
    reason="autoplat-example is not installed: pip install --no-deps -e examples/plugin-template "
    "(make test does)",
)


def platform(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """Run the CLI as a user would: installed third-party plugins autoload."""
    return run_platform(*args, cwd=cwd, timeout=300, AUTOPLAT_BUILTIN_ONLY="0", **env)


def tree(root: Path) -> dict[str, str]:
    """Relative path -> text of every file under ``root``, build leftovers left out."""
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and not any(p in JUNK or p.endswith(".egg-info") for p in path.relative_to(root).parts)
        and path.suffix != ".pyc"
    }


@needs_template
@pytest.mark.slow
def test_plugins_lists_the_template():
    result = platform("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    example = plugins["example"]
    assert example["package"] == "autoplat-example"
    assert example["version"] == md.version("autoplat-example")
    assert example["status"] == "ok" and example["errors"] == []
    assert example["registered"] == REGISTERED
    assert all(p["status"] == "ok" for p in plugins.values())


@needs_template
@pytest.mark.slow
def test_search_with_the_template_plugins(tmp_path):
    url = f"sqlite:///{tmp_path}/x.db"
    result = platform("search", str(EXAMPLE / "example.toml"), "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    store = Store(url, create=False)
    summary = store.summary(store.get_study("example"))
    assert summary["study"]["trial_counts"]["complete"] == 8
    assert all(set(t["params"]) >= {"depth", "width", "activation"} for t in summary["trials"])


@pytest.mark.slow
def test_plugins_new_scaffolds_a_renamed_package(tmp_path):
    result = platform("plugins", "new", "mypkg", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    made = tmp_path / "mypkg"
    files = tree(made)
    assert {
        "pyproject.toml",
        "README.md",
        "example.toml",
        "src/mypkg/plugin.py",
        "src/mypkg/space.toml",
        "tests/test_conformance.py",
    } <= set(files)
    assert 'mypkg = "mypkg.plugin"' in files["pyproject.toml"]
    assert 'name = "mypkg"' in files["pyproject.toml"]
    assert 'name = "mypkg-mlp"' in files["example.toml"]
    for name, text in files.items():
        for old in ("autoplat_example", "autoplat-example", '"example-', '"example"'):
            assert old not in text, f"{name} still says {old}"
        if name.endswith(".py"):
            compile(text, name, "exec")

    with pytest.raises(AutoplatError, match="already exists"):  # the CLI: exit code 2
        new_plugin("mypkg", tmp_path)
    assert tree(made) == files


@pytest.mark.parametrize("name", ["My Pkg", "1pkg", "my--pkg", "autoplat", "class", "json"])
def test_plugins_new_refuses_bad_names(tmp_path, name):
    with pytest.raises(AutoplatError, match="bad plugin package name"):
        new_plugin(name, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_plugins_new_kind_keeps_one_kind(tmp_path):
    result = platform(
        "plugins", "new", "autoplat-mymargin", "--kind", "acquisition", "--dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    files = tree(tmp_path / "autoplat-mymargin")
    assert set(files) == {
        "pyproject.toml",
        "README.md",
        "src/autoplat_mymargin/__init__.py",
        "src/autoplat_mymargin/plugin.py",
        "src/autoplat_mymargin/margin.py",
        "tests/conftest.py",
        "tests/test_conformance.py",
        "tests/test_plugin.py",
    }
    assert files["src/autoplat_mymargin/plugin.py"].count("@hookimpl") == 1
    assert "def register_acquisitions" in files["src/autoplat_mymargin/plugin.py"]
    assert "| acquisition | `mymargin-margin`" in files["README.md"]
    for name, text in files.items():
        assert not any(MARKER.match(line) for line in text.splitlines()), name
        for other in ("mlp", "shapes", "hill", "word_count", "WordCount", "search example.toml"):
            assert other not in text, (name, other)
    bad = platform("plugins", "new", "autoplat-x", "--kind", "benchmark", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "invalid choice: 'benchmark'" in bad.stderr
    with pytest.raises(AutoplatError, match="unknown plugin kind 'benchmark'"):
        new_plugin("autoplat-y", tmp_path, ["benchmark"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["autoplat-mymargin"]


def test_select_kinds_keeps_marked_lines_and_blocks():
    from autoplat.core.scaffold import select_kinds

    text = (
        "import a\n\nimport b  # kind: dataset\n\nimport c\n\n\n"
        "# kind: scorer\n@deco\ndef f():\n    x = 1\n\n    return x\n\n\n"
        "<!-- kind: dataset, scorer -->\npara\ngraph\n\nend\n"
    )
    assert select_kinds(text, {"dataset", "scorer"}) == (
        "import a\n\nimport b\n\nimport c\n\n\n"
        "@deco\ndef f():\n    x = 1\n\n    return x\n\n\npara\ngraph\n\nend\n"
    )
    assert select_kinds(text, {"dataset"}) == "import a\n\nimport b\n\nimport c\n\n\nend\n"
    assert select_kinds(text, set()) == "import a\n\nimport c\n\n\nend\n"


@pytest.mark.slow
@pytest.mark.parametrize("kinds", [None, *[[k] for k in KINDS]], ids=["all", *KINDS])
def test_scaffolded_package_passes_its_own_tests(tmp_path, kinds):
    """Installed (pip --target, no network), the new package loads and passes its tests:
    the whole template, and each kind on its own; ruff finds nothing to fix."""
    made, site = new_plugin("autoplat-mynet", tmp_path, kinds), tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-compile", "--target", str(site), str(made)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:asyncio", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=made,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert " passed" in tests.stdout
    ruff = Path(sys.executable).with_name("ruff")
    for check in (["check"], ["format", "--check"]):
        linted = subprocess.run(
            [str(ruff), *check, "--no-cache", str(made)], capture_output=True, text=True
        )
        assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_example_is_the_template_platform_copies():
    """examples/plugin-template (installed and tested by `make test`) is the very package
    `platform plugins new` copies (autoplat/templates/plugin), file for file."""
    from autoplat.core.scaffold import TEMPLATE

    example = Path(__file__).parents[1] / "examples" / "plugin-template"

    def files(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
        }

    assert files(TEMPLATE) and files(example) == files(TEMPLATE)
