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
            register(Digits)
    """,
    "broken_command": """
        from autoplat import hookimpl
        from autoplat.core.hookspecs import Command

        def arguments(parser):
            raise RuntimeError("options table missing")

        @hookimpl
        def register_commands(register):
            register(Command("wobbly", "breaks", "platform wobbly", arguments, print))
    """,
    "hello_command": """
        from autoplat import hookimpl
        from autoplat.core.hookspecs import Command

        def arguments(parser):
            parser.add_argument("--name", default="world")

        def run(args):
            print(f"hello {args.name}")
            return 0

        def search_again(parser):
            pass

        @hookimpl
        def register_commands(register):
            register(Command("hello", "greets", "platform hello --name you", arguments, run))
            register(Command("search", "a clash", "platform search", search_again, run))

        @hookimpl
        def on_study_end(study, best):
            raise RuntimeError("notifier offline")
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_commands_still_work_beside_broken_plugins(broken_site, tmp_path):
    result = run_cli(["runs", "--storage", f"sqlite:///{tmp_path}/none.db"], broken_site)
    assert result.returncode == 2  # no store there: a clear error, not a plugin crash
    assert "no results store" in result.stderr
    search = run_cli(["search", str(tmp_path / "missing.toml")], broken_site)
    assert search.returncode == 2 and "config file" in search.stderr
    for name in BROKEN:  # each problem reported once, with its package
        if name != "hello_command":  # its clash is reported below
            assert search.stderr.count(f"plugin '{name}' (package {name} 0.3)") == 1, search.stderr
    table = run_cli(["plugins"], broken_site)
    assert table.returncode == 0
    assert "broken_import" in table.stdout and "error" in table.stdout


@pytest.mark.slow
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


@pytest.mark.slow
def test_trace_switch_logs_each_hook_call(broken_site):
    result = run_cli(["plugins", "--json"], broken_site, AUTOPLAT_TRACE="1")
    assert "[autoplat trace] vit.register_architectures() -> ['vit']" in result.stderr
    assert "[autoplat trace] broken_hook.register_datasets() -> []" in result.stderr
    assert "register_commands" in result.stderr  # pluggy's own trace of called hooks


@pytest.mark.slow
def test_plugin_commands_arrive_like_builtin_ones_and_fail_alone(broken_site):
    """A plugin's command works; one whose options raise is reported by its plugin's name
    and dropped; a plugin cannot take over a built-in command; the others keep working."""
    hello = run_cli(["hello", "--name", "you"], broken_site)
    assert (hello.returncode, hello.stdout) == (0, "hello you\n"), hello.stderr
    listing = run_cli(["--help"], broken_site)
    assert listing.returncode == 0
    assert "hello" in listing.stdout and "wobbly" not in listing.stdout
    assert "plugin 'broken_command'" in listing.stderr and "options table missing" in listing.stderr
    plugins = {p["name"]: p for p in json.loads(run_cli(["plugins", "--json"], broken_site).stdout)}
    assert any("options table missing" in e for e in plugins["broken_command"]["errors"])
    clash = plugins["hello_command"]["errors"]
    assert "command 'search' is already registered by plugin 'commands'" in clash[0]
    assert plugins["commands"]["status"] == "ok"
    assert {"search", "al", "curate", "show", "runs"} <= set(
        plugins["commands"]["registered"]["commands"]
    )
    assert plugins["embedding-scorers"]["registered"]["commands"] == ["experts"]


def test_every_builtin_item_imports_with_its_registered_name():
    """The lazy table (autoplat/plugins/builtin.py) and the packs point at real classes."""
    registry = Registry()
    registry.load_entry_points()
    for kind in registry.items:
        for name in registry.names(kind):
            item = registry.get(kind, name)
            assert item.name == name, (kind, name)
    assert registry.errors() == []


def test_registering_an_instance_is_refused_with_the_fix():
    from autoplat import hookimpl
    from autoplat.plugins.datasets.digits import Digits

    class Plugin:
        @hookimpl
        def register_datasets(self, register):
            register(Digits())

    info = Registry().add_plugin(Plugin(), "mine")
    assert info.errors == [
        "registered a Digits instance as a dataset; register the class "
        "(register(Digits), not register(Digits()))"
    ]


def test_a_lazy_item_that_does_not_import_fails_when_used_naming_its_plugin():
    from autoplat import hookimpl
    from autoplat.core.hookspecs import lazy

    class Plugin:
        @hookimpl
        def register_datasets(self, register):
            register(lazy("ghost", "no_such_package.data:Ghost"))
            register(lazy("misnamed", "autoplat.plugins.datasets.digits:Digits"))

    registry = Registry()
    info = registry.add_plugin(Plugin(), "mine")
    assert info.status == "ok" and info.registered == {"datasets": ["ghost", "misnamed"]}
    with pytest.raises(PluginError, match=r"plugin 'mine': cannot import dataset 'ghost'"):
        registry.get("datasets", "ghost")
    with pytest.raises(PluginError, match=r"is named 'digits', registered as 'misnamed'"):
        registry.get("datasets", "misnamed")
    assert info.status == "error" and len(info.errors) == 2


def test_event_hooks_run_per_plugin_one_raising_does_not_stop_the_others():
    from autoplat import hookimpl

    seen = []

    class Loud:
        @hookimpl
        def on_study_end(self, study, best):
            raise RuntimeError("webhook down")

    class Quiet:
        @hookimpl
        def on_study_end(self, study, best):
            seen.append(study)

    registry = Registry()
    registry.add_plugin(Loud(), "loud")
    registry.add_plugin(Quiet(), "quiet")
    registry.notify("on_study_end", study="s", best=None)
    registry.notify("on_study_end", study="t", best=None)
    assert seen == ["s", "t"]
    (error,) = registry.plugins["loud"].errors  # reported once, not per call
    assert error.startswith("on_study_end raised RuntimeError: webhook down")


@pytest.mark.slow
def test_help_runs_and_plugins_import_no_heavy_library(tmp_path):
    """Fast start: registering plugins imports no torch, Ray, numpy, pydantic or Textual;
    `runs` and `show` of a search study add only SQLAlchemy Core (no SQLModel, no pydantic)."""
    import subprocess
    import sys

    from autoplat.core.store import Store, TrialState

    url = f"sqlite:///{tmp_path}/x.db"
    store = Store(url)
    trial = store.start_trial(store.create_study("s").id, {"depth": 2})
    store.finish_trial(trial.id, TrialState.COMPLETE, value=0.5)
    check = (
        "import sys\n"
        "from autoplat.cli import main\n"
        "try:\n    main(sys.argv[2:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(set(sys.argv[1].split(',')) & set(sys.modules)))\n"
    )
    heavy = "torch,ray,numpy,textual,pandas,sklearn,onnx,optuna,sqlmodel,pydantic"
    for args, store_allowed in (
        (["--help"], False),
        (["plugins"], False),
        (["runs", "--storage", url], True),
        (["show", "s", "--storage", url], True),
    ):
        watched = heavy if store_allowed else heavy + ",sqlalchemy"
        result = subprocess.run(
            [sys.executable, "-c", check, watched, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout.strip().splitlines()[-1] == "[]", (args, result.stdout, result.stderr)
        assert "depth" in result.stdout or args[0] != "show", result.stdout


# -- names: dashes are canonical, the underscore names of older releases still work -------
OLD_NAMES = {
    "acquisitions": {
        "least_confidence": "least-confidence",
        "variation_ratios": "variation-ratios",
        "mean_std": "mean-std",
        "ranked_batch": "ranked-batch",
        "cluster_margin": "cluster-margin",
        "qbc_vote_entropy": "qbc-vote-entropy",
        "qbc_kl": "qbc-kl",
    },
    "search_spaces": {
        "audio_visual": "audio-visual",
        "latent_diffusion": "latent-diffusion",
        "video_text": "video-text",
    },
}


def test_builtin_names_are_dashed_and_old_underscore_names_still_resolve():
    from autoplat.core.registry import get_registry

    registry = get_registry()
    builtin = [
        (kind, name)
        for (kind, name), owner in registry.owners.items()
        if registry.plugins[owner].package == "autoplat"
    ]
    assert builtin and [(k, n) for k, n in builtin if "_" in n] == []
    for kind, renamed in OLD_NAMES.items():
        for old, new in renamed.items():
            assert registry.get(kind, old) is registry.get(kind, new), (kind, old)
            assert registry.get(kind, old).name == new
    with pytest.raises(PluginError, match="unknown acquisition 'least_confidense'"):
        registry.get("acquisitions", "least_confidense")


def test_a_name_differing_only_in_dash_or_underscore_is_taken():
    from autoplat import hookimpl
    from autoplat.strategies.acquisition.uncertainty import LeastConfidence

    class Clash(LeastConfidence):
        name = "least_confidence"

    class Plugin:
        @hookimpl
        def register_acquisitions(self, register):
            register(Clash)

    registry = Registry()
    registry.load_entry_points()
    info = registry.add_plugin(Plugin(), "clash")
    assert info.errors == [
        "acquisition 'least_confidence' is already registered by plugin 'acquisitions' (as "
        "'least-confidence': '_' and '-' are the same); plugin 'clash' registering it again "
        "was skipped"
    ]
    assert registry.get("acquisitions", "least_confidence").name == "least-confidence"


def test_an_al_config_with_old_names_loads(tmp_path):
    from autoplat.core.al_study import load_al_config
    from autoplat.core.registry import get_registry

    example = (Path(__file__).parents[1] / "examples" / "al_digits.toml").read_text()
    old = '["random", "least_confidence", "qbc_vote_entropy", "ranked_batch"]'
    config = tmp_path / "old.toml"
    config.write_text(
        example.replace('["random", "margin", "entropy", "bald", "coreset", "badge"]', old)
    )
    assert old in config.read_text()
    resolved = load_al_config(config, get_registry())
    names = [a.name for a in resolved.acquisitions]
    assert names == ["random", "least-confidence", "qbc-vote-entropy", "ranked-batch"]


def test_show_reads_a_study_stored_under_old_names(tmp_path, capsys):
    from autoplat.cli import main
    from autoplat.core.store import ALRound, Store, TrialState

    url = f"sqlite:///{tmp_path}/old.db"
    store = Store(url)
    config = {"al": {"acquisitions": ["least_confidence", "qbc_vote_entropy"]}}
    study = store.create_study(
        "old-al", kind="al", direction="maximize", metric="test_accuracy", config=json.dumps(config)
    )
    for acquisition in ("least_confidence", "qbc_vote_entropy"):
        trial = store.start_trial(study.id, {"acquisition": acquisition, "seed": 0})
        for round_, (n, accuracy) in enumerate([(20, 0.5), (30, 0.7)]):
            metrics = {"test_accuracy": accuracy, "queried": [], "labels": []}
            store.add_al_round(
                ALRound(
                    study_id=study.id,
                    trial_id=trial.id,
                    acquisition=acquisition,
                    seed=0,
                    round=round_,
                    n_labeled=n,
                    metrics=json.dumps(metrics),
                )
            )
        store.finish_trial(trial.id, TrialState.COMPLETE, value=0.7)
    assert main(["show", "old-al", "--storage", url]) == 0
    shown = capsys.readouterr().out
    assert "least_confidence" in shown and "qbc_vote_entropy" in shown
    assert main(["show", "old-al", "--storage", url, "--json"]) == 0
    curves = json.loads(capsys.readouterr().out)
    assert "least_confidence" in json.dumps(curves)
