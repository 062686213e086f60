"""The plugin manager: built-ins, installed entry points, a plugins folder, a block list.

Discovery order: every entry point in the ``workbench`` group (the built-ins
are registered that way too), then each ``*.py`` file in the plugins folder.
``WORKBENCH_BLOCK_PLUGINS`` (comma-separated plugin names) blocks plugins.
A plugin that fails to import, or whose hook raises, is recorded in
:attr:`Registry.failures` and the others carry on. Nothing here imports torch.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

from workbench import PROJECT, hookspecs
from workbench.api import Backend, Evaluator, Launcher
from workbench.metrics import check_declared

BLOCK_ENV = "WORKBENCH_BLOCK_PLUGINS"
BUILTIN_DIST = PROJECT


@dataclass
class Failure:
    """A plugin that could not be loaded or whose hook raised."""

    plugin: str
    source: str
    error: str

    def __str__(self) -> str:
        return f"{self.plugin} ({self.source}): {self.error}"


@dataclass
class Provided:
    """Where a registered backend, evaluator or launcher came from."""

    item: Any
    plugin: str
    source: str


@dataclass
class Registry:
    """Everything the loaded plugins provide, with provenance and failures."""

    pm: pluggy.PluginManager
    backends: dict[str, Backend] = field(default_factory=dict)
    evaluators: dict[str, Evaluator] = field(default_factory=dict)
    launchers: dict[str, Launcher] = field(default_factory=dict)
    provenance: dict[tuple[str, str], Provided] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)

    def origin(self, kind: str, name: str) -> Provided | None:
        return self.provenance.get((kind, name))

    def failure_note(self) -> str:
        """`` — plugin 'y' failed to load: ...`` for each failed plugin ("" when none failed)."""
        return "".join(f" — plugin {f.plugin!r} failed to load: {f.error}" for f in self.failures)


def blocked_names() -> list[str]:
    return [n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()]


def make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(
    plugins_dir: str | Path | None = None, extra: list[Any] | None = None
) -> Registry:
    """Load every plugin and collect what they register; never raises for a bad plugin."""
    pm = make_manager()
    reg = Registry(pm=pm, blocked=blocked_names())
    for name in reg.blocked:
        pm.set_blocked(name)
    _load_entry_points(reg)
    if plugins_dir:
        _load_folder(reg, Path(plugins_dir))
    for i, plugin in enumerate(extra or []):
        _register(reg, plugin, getattr(plugin, "__name__", f"extra{i}"), "test")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        reg.failures.append(Failure(str(exc.plugin), "hooks", str(exc)))
    _collect(reg, "backends", Backend)
    _collect(reg, "evaluators", Evaluator)
    _collect(reg, "launchers", Launcher)
    return reg


def _register(reg: Registry, plugin: Any, name: str, source: str) -> None:
    if reg.pm.is_blocked(name):
        return
    if reg.pm.has_plugin(name):
        reg.failures.append(Failure(name, source, f"the plugin name {name!r} is already taken by "
                                    f"{reg.sources.get(name, '?')}: rename the entry point"))
        return
    try:
        reg.pm.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        reg.failures.append(Failure(name, source, str(exc)))
        return
    reg.sources[name] = source


def _load_entry_points(reg: Registry) -> None:
    for ep in entry_points(group=PROJECT):
        dist = ep.dist.name if ep.dist else "?"
        if reg.pm.is_blocked(ep.name) or reg.pm.is_blocked(ep.value):
            continue
        source = f"{dist} {ep.dist.version}" if ep.dist else dist
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import error is the plugin's fault
            reg.failures.append(Failure(ep.name, source, _summary(exc)))
            continue
        _register(reg, plugin, ep.name, source)


def _load_folder(reg: Registry, folder: Path) -> None:
    if not folder.is_dir():
        reg.failures.append(Failure(str(folder), "plugins folder", "not a folder"))
        return
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        name = path.stem
        if reg.pm.is_blocked(name):
            continue
        module_name = f"workbench_local_plugins.{name}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001
            sys.modules.pop(module_name, None)
            reg.failures.append(Failure(name, str(path), _summary(exc)))
            continue
        _register(reg, module, name, str(path))


def _collect(reg: Registry, kind: str, expected: type[Any]) -> None:
    """Call ``register_<kind>`` on each plugin separately, so one raising spoils nothing."""
    target: dict[str, Any] = getattr(reg, kind)
    hook = getattr(reg.pm.hook, f"register_{kind}")
    for impl in hook.get_hookimpls():  # registration order: built-ins before local files
        plugin_name = reg.pm.get_name(impl.plugin) or "?"
        source = reg.sources.get(plugin_name, "?")

        def register(item: Any, _plugin: str = plugin_name, _source: str = source) -> None:
            if not isinstance(item, expected):
                raise TypeError(f"register() expects a {expected.__name__}, got {item!r}")
            if isinstance(item, Evaluator):
                problems = check_declared(item.name, item.metrics)
                if problems:
                    raise ValueError("; ".join(problems))
            if item.name in target:
                prev = reg.provenance[(kind, item.name)]
                raise ValueError(
                    f"{kind[:-1]} {item.name!r} is already provided by plugin {prev.plugin!r}"
                )
            target[item.name] = item
            reg.provenance[(kind, item.name)] = Provided(item, _plugin, _source)

        kwargs = {"register": register}
        try:
            impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
        except Exception as exc:  # noqa: BLE001
            reg.failures.append(Failure(plugin_name, source, f"register_{kind}: {_summary(exc)}"))


def _summary(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
