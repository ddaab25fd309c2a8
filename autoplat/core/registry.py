"""The plugin manager: loads plugins from the ``autoplat`` entry-point group, isolates
broken ones, and looks registered things up by kind and name."""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import importlib.util
import logging
import os
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from autoplat.core import hookspecs
from autoplat.core.errors import PluginError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "autoplat"
DISABLE_ENV = "AUTOPLAT_DISABLE_PLUGINS"
BUILTIN_ONLY_ENV = "AUTOPLAT_BUILTIN_ONLY"  # "1": load only autoplat's own plugins (tests)
TRACE_ENV = "AUTOPLAT_TRACE"  # "1": print every hook call to stderr
KINDS = tuple(hookspecs.KINDS)  # "architectures", ..., "commands": one per register_ hook
SINGULAR = {name: kind.noun for name, kind in hookspecs.KINDS.items()}


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``platform plugins`` shows it."""

    name: str
    module: str
    package: str | None = None
    version: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    disabled: bool = False

    @property
    def status(self) -> str:
        if self.disabled:
            return "disabled"
        return "error" if self.errors else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "package": self.package,
            "version": self.version,
            "status": self.status,
            "hooks": self.hooks,
            "registered": self.registered,
            "errors": self.errors,
        }


def _first_line_error(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({frame.filename}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _trace(message: str) -> None:
    print(f"[autoplat trace] {message}", file=sys.stderr)


def disabled_plugins() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


class Registry:
    """Everything plugins registered, by kind and name, plus per-plugin load status."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.items: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self.owners: dict[tuple[str, str], str] = {}
        self.local: list[str] = []  # local modules loaded (absolute .py paths, module names)
        self.trace = os.environ.get(TRACE_ENV) == "1"
        if self.trace:
            self.pm.trace.root.setwriter(lambda message: _trace(message.rstrip()))
            self.pm.enable_tracing()

    # -- loading -----------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Import every plugin of the entry-point group; a broken one is recorded, not fatal."""
        blocked = disabled_plugins()
        builtin_only = os.environ.get(BUILTIN_ONLY_ENV) == "1"
        own_first = lambda e: (not e.value.startswith("autoplat."), e.name)  # noqa: E731
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=own_first):
            dist = getattr(ep, "dist", None)
            if ep.name in self.plugins or (builtin_only and not ep.value.startswith("autoplat.")):
                continue
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                package=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
            )
            self.plugins[ep.name] = info
            if ep.name in blocked:
                info.disabled = True
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
                info.errors.append(f"failed to import: {_first_line_error(exc)}")
                log.debug("plugin %r failed to import: %s", ep.name, exc)
                continue
            self._collect(ep.name, module, info)

    def add_plugin(self, module: ModuleType | object, name: str) -> PluginInfo:
        """Register an in-process plugin object (tests, notebooks); returns its status."""
        info = PluginInfo(name=name, module=getattr(module, "__name__", repr(module)))
        self.plugins[name] = info
        if name in disabled_plugins():
            info.disabled = True
        else:
            self._collect(name, module, info)
        return info

    def load_module(self, spec: str, base: Path | None = None) -> PluginInfo:
        """Load a local plugin module (``[plugins] modules``, ``--plugin``): a ``.py`` file
        (relative to ``base``, default the working directory) or an importable module name.
        PluginError when it is not there; an import error is recorded, as for entry points.
        ``local`` lists it, for Ray workers to load (``load_local``)."""
        target = _module_target(spec, base or Path.cwd())
        known = next((p for p in self.plugins.values() if p.module == target), None)
        if known is not None:
            return known
        stem = Path(target).stem if target.endswith(".py") else target
        name = stem if stem not in self.plugins else target
        info = PluginInfo(name=name, module=target)
        self.plugins[name] = info
        self.local.append(target)
        if name in disabled_plugins():
            info.disabled = True
            return info
        try:
            module = _import_local(target)
        except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
            info.errors.append(f"failed to import: {_first_line_error(exc)}")
            return info
        self._collect(name, module, info)
        return info

    def remove_plugin(self, name: str) -> None:
        """Forget a plugin and everything it registered (tests; see autoplat.testing)."""
        info = self.plugins.pop(name)
        if info.module in self.local:
            self.local.remove(info.module)
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        for kind, names in info.registered.items():
            for item in names:
                del self.items[kind][item]
                del self.owners[(kind, item)]

    def _collect(self, name: str, module: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(module, name=name)
        except Exception as exc:  # noqa: BLE001 - e.g. a hookimpl with a wrong signature
            info.errors.append(f"invalid plugin: {_first_line_error(exc)}")
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(module) or [])
        for kind in KINDS:
            hook = getattr(self.pm.hook, f"register_{kind}")
            for impl in hook.get_hookimpls():
                if impl.plugin_name != name:
                    continue
                found: list[Any] = []
                start = time.perf_counter()
                try:
                    impl.function(register=found.append)
                except Exception as exc:  # noqa: BLE001 - the plugin's bug, not ours
                    info.errors.append(f"register_{kind} raised {_first_line_error(exc)}")
                    continue
                finally:
                    if self.trace:
                        names = [getattr(item, "name", repr(item)) for item in found]
                        ms = (time.perf_counter() - start) * 1000
                        _trace(f"{name}.register_{kind}() -> {names} ({ms:.1f} ms)")
                for item in found:
                    self._add(kind, item, name, info)

    def _add(self, kind: str, item: Any, plugin: str, info: PluginInfo) -> None:
        problem = _registration_problem(hookspecs.KINDS[kind], item)
        if problem:
            info.errors.append(problem)
            return
        item_name = item.name
        taken = self._canonical(kind, item_name)
        if taken is not None:
            owner = self.owners[(kind, taken)]
            same = "" if taken == item_name else f" (as '{taken}': '_' and '-' are the same)"
            info.errors.append(
                f"{SINGULAR[kind]} '{item_name}' is already registered by plugin '{owner}'"
                f"{same}; plugin '{plugin}' registering it again was skipped"
            )
            return
        self.items[kind][item_name] = item
        self.owners[(kind, item_name)] = plugin
        info.registered.setdefault(kind, []).append(item_name)

    def notify(self, event: str, **kwargs: Any) -> None:
        """Call an event hook (``on_trial_result``, ``on_study_end``) of every plugin; one
        that raises is reported by name (once per plugin) and the others still run."""
        for impl in getattr(self.pm.hook, event).get_hookimpls():
            try:
                impl.function(**kwargs)
            except Exception as exc:  # noqa: BLE001 - the plugin's bug, not the study's
                info = self.plugins.get(impl.plugin_name)
                message = f"{event} raised {_first_line_error(exc)}"
                if info is not None and message not in info.errors:
                    info.errors.append(message)
                    log.warning("plugin '%s': %s", impl.plugin_name, message)

    # -- lookups -----------------------------------------------------------------
    def get(self, kind: str, name: str) -> Any:
        """The item of this kind and name (the class; for a shared kind, its one instance),
        imported now if it was registered lazily; PluginError when unknown or broken.

        Names match with '_' and '-' alike: dashes are the canonical spelling, and the
        underscore names of older releases (``least_confidence``, in configs and stored
        studies) still find ``least-confidence``."""
        items = self.items[kind]
        name = self._canonical(kind, name) or name
        if name not in items:
            raise PluginError(unknown_name_message(SINGULAR[kind], name, list(items)))
        item = items[name]
        spec = hookspecs.KINDS[kind]
        if isinstance(item, hookspecs.Lazy):
            item = self._resolve(spec, item)
        if spec.shared and isinstance(item, type):
            item = self._make(spec, item)
        items[name] = item
        return item

    def _resolve(self, kind: hookspecs.Kind, item: hookspecs.Lazy) -> Any:
        owner = self.owners[(kind.name, item.name)]
        try:
            found = _import_target(item.target)
        except Exception as exc:  # noqa: BLE001 - the plugin's import failed
            problem = f"cannot import {kind.noun} '{item.name}': {_first_line_error(exc)}"
        else:
            problem = _registration_problem(kind, found)
            if not problem and found.name != item.name:
                problem = f"{item.target} is named '{found.name}', registered as '{item.name}'"
            if not problem:
                return found
        self.plugins[owner].errors.append(problem)
        raise PluginError(f"plugin '{owner}': {problem}")

    def _make(self, kind: hookspecs.Kind, cls: type) -> Any:
        try:
            return cls()
        except Exception as exc:  # noqa: BLE001 - the plugin's constructor failed
            owner = self.owners[(kind.name, cls.name)]
            problem = f"{kind.noun} '{cls.name}' failed to start: {_first_line_error(exc)}"
            self.plugins[owner].errors.append(problem)
            raise PluginError(f"plugin '{owner}': {problem}") from exc

    def _canonical(self, kind: str, name: str) -> str | None:
        """The registered spelling of ``name`` ('_' and '-' alike), or None."""
        if name in self.items[kind]:
            return name
        key = same_name(name)
        return next((n for n in self.items[kind] if same_name(n) == key), None)

    def names(self, kind: str) -> list[str]:
        return sorted(self.items[kind])

    def errors(self) -> list[tuple[PluginInfo, str]]:
        return [(p, err) for p in self.plugins.values() for err in p.errors]


def _import_target(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _registration_problem(kind: hookspecs.Kind, item: Any) -> str | None:
    """Why ``item`` cannot be registered as a ``kind``, or None: a class of the kind's
    interface (or a ``lazy`` one), or for value kinds an instance of the value type."""
    if isinstance(item, hookspecs.Lazy):
        return None if item.name else f"registered a lazy {kind.noun} without a name"
    expected = kind.interface.rpartition(":")[2]
    if kind.registers_classes:
        if not isinstance(item, type):
            what = type(item).__name__
            return (
                f"registered {_a(what)} instance as {_a(kind.noun)}; register the class "
                f"(register({what}), not register({what}()))"
            )
        base = _import_target(kind.interface)
        if not issubclass(item, base):
            return f"registered {item.__name__}, which is not a subclass of {expected}"
    elif not isinstance(item, _import_target(kind.interface)):
        return f"registered {item!r} as {_a(kind.noun)}; expected {_a(expected)}"
    name = getattr(item, "name", None)
    if not isinstance(name, str) or not name:
        return f"registered a {kind.noun} without a string 'name': {item!r}"
    return None


def same_name(name: str) -> str:
    """The form names are compared in: '_' and '-' are the same ("least_confidence" is
    "least-confidence")."""
    return name.replace("_", "-")


def _a(noun: str) -> str:
    return f"{'an' if noun[0].lower() in 'aeiou' else 'a'} {noun}"


def unknown_name_message(what: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    listed = ", ".join(sorted(available)) or "none installed"
    return f"unknown {what} '{name}'{hint} Available: {listed}"


def _module_target(spec: str, base: Path) -> str:
    """A local plugin's absolute file path, or its module name; PluginError if absent."""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        path = (base / Path(spec).expanduser()).resolve()
        if not path.is_file():
            raise PluginError(
                f"plugin file '{path}' not found; give a .py file (relative to the config "
                "file, or to the working directory for --plugin) or an importable module name"
            )
        return str(path)
    try:
        found = importlib.util.find_spec(spec)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise PluginError(
            f"no module named '{spec}'; install it, put its folder on PYTHONPATH, or give "
            "the path of its .py file"
        )
    return spec


def _import_local(target: str) -> ModuleType:
    """Import a local plugin: a file under a name fixed by its path (so Ray workers that
    load the same file unpickle its classes), or a module by name."""
    if not target.endswith(".py"):
        return importlib.import_module(target)
    name = f"autoplat_local_{Path(target).stem}_{zlib.crc32(target.encode()):08x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, target)
    assert spec is not None and spec.loader is not None  # a .py file that exists
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loading installed plugins on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry()
        registry.load_entry_points()
        _REGISTRY = registry
    return _REGISTRY


def load_local(targets: list[str]) -> None:
    """Load the driver's local plugin modules (its ``Registry.local``) into this process's
    registry, e.g. in a Ray worker; one this node lacks is recorded as a plugin error."""
    registry = get_registry()
    for target in targets:
        try:
            registry.load_module(target)
        except PluginError as exc:
            registry.plugins[target] = PluginInfo(target, target, errors=[str(exc)])
