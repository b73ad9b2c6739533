"""Finding plugins and collecting what they contribute."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from palaestra import hookspecs
from palaestra.registry import EnvRegistry, RewardRegistry, SandboxBackendRegistry

ENTRY_POINT_GROUP = "palaestra.plugins"
DISABLE_ENV_VAR = "PALAESTRA_DISABLE_PLUGINS"

log = logging.getLogger("palaestra.plugins")


@dataclass
class LoadedPlugin:
    name: str
    version: str
    module: ModuleType | object
    environments: list[str] = field(default_factory=list)


class PluginError(RuntimeError):
    """A plugin could not be imported or its registration failed."""


def disabled_from_env() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLE_ENV_VAR, "").split(",") if name.strip()}


class Plugins:
    """The pluggy manager plus the registries the plugins filled."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("palaestra")
        self.pm.add_hookspecs(hookspecs)
        self.loaded: dict[str, LoadedPlugin] = {}
        self.envs = EnvRegistry()
        self.rewards = RewardRegistry()
        self.sandbox_backends = SandboxBackendRegistry()
        self.failed: dict[str, str] = {}  # plugin name -> why it could not register

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def add(self, name: str, plugin: ModuleType | object, version: str = "") -> None:
        if name in self.loaded:
            raise PluginError(f"a plugin named {name!r} is already loaded")
        self.pm.register(plugin, name=name)
        self.loaded[name] = LoadedPlugin(name, version, plugin)

    def discover(self, extra_modules: Iterable[str] = (), disabled: Iterable[str] = ()) -> None:
        """Load entry-point plugins and the named modules, skipping disabled names."""
        skip = set(disabled) | disabled_from_env()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in skip or ep.name in self.loaded:
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the server down
                log.error("plugin %s (%s) failed to import: %s", ep.name, ep.value, exc)
                continue
            version = ep.dist.version if ep.dist is not None else ""
            self.add(ep.name, module, version)
        for dotted in extra_modules:
            if dotted in skip or dotted in self.loaded:
                continue
            try:
                module = importlib.import_module(dotted)
            except ImportError as exc:
                raise PluginError(f"cannot import plugin module {dotted!r}: {exc}") from exc
            self.add(dotted, module, getattr(module, "__version__", ""))

    def register_all(self, plugin_config: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Run the registration hooks plugin by plugin; a plugin that fails is logged and left out."""
        plugin_config = plugin_config or {}
        for name, info in list(self.loaded.items()):
            try:
                self._register_one(name, info, dict(plugin_config.get(name, {})))
            except Exception as exc:  # one broken plugin must not take the others down
                log.error("plugin %s failed to register: %s", name, exc)
                self.failed[name] = str(exc)
        self.envs.set_plugin("", "")

    def _register_one(self, name: str, info: LoadedPlugin, config: dict[str, Any]) -> None:
        """Run one plugin's registration hooks, so each contribution is stamped with its owner."""
        impl = _hook_impl(self.pm, info.module, "palaestra_register_sandbox_backends")
        if impl is not None:
            impl(registry=self.sandbox_backends)
        impl = _hook_impl(self.pm, info.module, "palaestra_register_reward_functions")
        if impl is not None:
            impl(registry=self.rewards, config=config)
        impl = _hook_impl(self.pm, info.module, "palaestra_register_environments")
        if impl is not None:
            before = set(self.envs.ids())
            self.envs.set_plugin(name, info.version)
            impl(registry=self.envs, config=config)
            info.environments = sorted(set(self.envs.ids()) - before)


def _hook_impl(pm: pluggy.PluginManager, plugin: object, hook_name: str) -> Any:
    """The plugin's own implementation of a hook, or None: lets us call one plugin at a time."""
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        if impl.plugin is plugin:
            return impl.function
    return None


def load_plugins(
    extra_modules: Iterable[str] = (),
    disabled: Iterable[str] = (),
    plugin_config: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plugins:
    plugins = Plugins()
    plugins.discover(extra_modules, disabled)
    plugins.register_all(plugin_config)
    return plugins
