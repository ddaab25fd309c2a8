"""Plugin loading: built-ins through the entry-point group, broken plugins isolated."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from autoplat.core.errors import PluginError
from autoplat.core.registry import Registry
from autoplat.testing import run_platform

BROKEN = {
    "broken_import": "import no_such_module_anywhere\n",
    "broken_hook": """
        from autoplat import hookimpl

        @hookimpl
        def register_datasets(register):
            raise RuntimeError("dataset server down")
    """,
    "dup_name": """
        from autoplat import hookimpl
        from autoplat.plugins.datasets.digits import Digits

        @hookimpl
        def register_datasets(register):
            register(Digits())
    """,
}


def install_dist(site: Path, name: str, code: str) -> None:
    """Put a real distribution (module + dist-info with an entry point) on ``site``."""
    (site / f"{name}.py").write_text(textwrap.dedent(code))
    info = site / f"{name}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[autoplat]\n{name} = {name}\n")


@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    for name, code in BROKEN.items():
        install_dist(site, name, code)
    return site


def run_cli(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess:
    """`platform ARGS` with ``site`` on the path and third-party plugins autoloading."""
    return run_platform(*args, PYTHONPATH=str(site), AUTOPLAT_BUILTIN_ONLY="0", timeout=120, **env)


def test_builtins_load_through_entry_points():
    registry = Registry()
    registry.load_entry_points()
    assert "vit" in registry.names("architectures")
    assert {"digits", "mnist5k"} <= set(registry.names("datasets"))
    assert {"random", "grid", "tpe", "evolution"} <= set(registry.names("strategies"))
    assert "vit" in registry.names("search_spaces")
    assert all(p.package == "autoplat" and p.status == "ok" for p in registry.plugins.values())


def test_broken_plugins_are_reported_and_skipped(broken_site):
    result = run_cli(["plugins", "--json"], broken_site)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert "failed to import: ModuleNotFoundError" in plugins["broken_import"]["errors"][0]
    assert "dataset server down" in plugins["broken_hook"]["errors"][0]
    dup = plugins["dup_name"]["errors"][0]
    assert "dataset 'digits' is already registered by plugin 'digits'" in dup
    assert "'dup_name'" in dup
    assert plugins["dup_name"]["version"] == "0.3"
    assert plugins["digits"]["status"] == "ok"
    assert plugins["vit"]["registered"] == {"architectures": ["vit"]}
    assert plugins["vit"]["hooks"] == ["register_architectures"]
    assert plugins["broken_hook"]["hooks"] == ["register_datasets"]


def test_commands_still_work_beside_broken_plugins(broken_site, tmp_path):
    result = run_cli(["runs", "--storage", f"sqlite:///{tmp_path}/none.db"], broken_site)
    assert result.returncode == 2  # no store there: a clear error, not a plugin crash
    assert "no results store" in result.stderr
    search = run_cli(["search", str(tmp_path / "missing.toml")], broken_site)
    assert search.returncode == 2 and "config file" in search.stderr
    for name in BROKEN:  # each problem reported once, with its package
        assert search.stderr.count(f"plugin '{name}' (package {name} 0.3)") == 1, search.stderr
    table = run_cli(["plugins"], broken_site)
    assert table.returncode == 0
    assert "broken_import" in table.stdout and "error" in table.stdout


def test_disable_plugins_env(broken_site):
    result = run_cli(
        ["plugins", "--json"], broken_site, AUTOPLAT_DISABLE_PLUGINS="broken_import,dup_name"
    )
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["broken_import"]["status"] == "disabled"
    assert plugins["broken_import"]["errors"] == []
    assert plugins["broken_hook"]["status"] == "error"


def test_unknown_name_lists_available():
    registry = Registry()
    registry.load_entry_points()
    with pytest.raises(PluginError, match=r"unknown strategy 'tep'; did you mean 'tpe'\?"):
        registry.get("strategies", "tep")


def test_add_plugin_in_process_and_duplicate():
    from autoplat import hookimpl

    class Plugin:
        @hookimpl
        def register_strategies(self, register):
            from autoplat.strategies.search.random import RandomSearch

            register(RandomSearch)

    registry = Registry()
    registry.load_entry_points()
    info = registry.add_plugin(Plugin(), "mine")
    assert info.status == "error"
    assert "strategy 'random' is already registered by plugin 'search-strategies'" in info.errors[0]


def test_trace_switch_logs_each_hook_call(broken_site):
    result = run_cli(["plugins", "--json"], broken_site, AUTOPLAT_TRACE="1")
    assert "[autoplat trace] vit.register_architectures() -> ['vit']" in result.stderr
    assert "[autoplat trace] broken_hook.register_datasets() -> []" in result.stderr
    assert "register_commands" in result.stderr  # pluggy's own trace of called hooks
