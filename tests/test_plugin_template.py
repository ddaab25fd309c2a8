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
from autoplat.core.scaffold import new_plugin
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
def test_scaffolded_package_passes_its_own_tests(tmp_path):
    """Installed (pip --target, no network), the new package loads and passes its tests."""
    made, site = new_plugin("autoplat-mynet", tmp_path), tmp_path / "site"
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
