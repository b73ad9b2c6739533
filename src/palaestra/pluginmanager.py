"""Finding plugins and collecting what they contribute.

A plugin ends in one of three states, which `palaestra plugins` and `GetServerInfo` report:
loaded (it serves what it registered), unavailable (it raised `PluginUnavailable`: an optional extra is
missing; not a fault) or failed (its import or registration raised, or it implements a hook that does not
exist). A failed or unavailable plugin serves nothing: what it registered before failing is removed and
its hooks are no longer called. Under strict plugins (`[plugins] strict = true` or
`PALAESTRA_STRICT_PLUGINS=1`; on in the tests and CI) a failure is fatal: loading raises `PluginError`.
"""

from __future__ import annotations

import difflib
import enum
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
from palaestra.hookspecs import PluginUnavailable
from palaestra.registry import EnvRegistry, RewardRegistry, SandboxBackendRegistry

ENTRY_POINT_GROUP = "palaestra.plugins"
DISABLE_ENV_VAR = "PALAESTRA_DISABLE_PLUGINS"
STRICT_ENV_VAR = "PALAESTRA_STRICT_PLUGINS"
HOOK_NAMES = sorted(name for name in dir(hookspecs) if name.startswith("palaestra_"))

log = logging.getLogger("palaestra.plugins")


class PluginState(enum.Enum):
    LOADED = "loaded"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"


@dataclass
class LoadedPlugin:
    name: str
    version: str
    module: ModuleType | object
    environments: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that serves nothing, and why."""

    name: str
    state: PluginState  # UNAVAILABLE or FAILED
    stage: str  # "import" or "register"
    error: str
    version: str = ""


class PluginError(RuntimeError):
    """A plugin could not be imported or its registration failed (raised under strict plugins)."""


def disabled_from_env() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLE_ENV_VAR, "").split(",") if name.strip()}


def strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


class Plugins:
    """The pluggy manager plus the registries the plugins filled."""

    def __init__(self, strict: bool | None = None) -> None:
        self.pm = pluggy.PluginManager("palaestra")
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict_from_env() if strict is None else strict
        self.loaded: dict[str, LoadedPlugin] = {}
        self.envs = EnvRegistry()
        self.rewards = RewardRegistry()
        self.sandbox_backends = SandboxBackendRegistry()
        self.failures: dict[str, PluginFailure] = {}

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def add(self, name: str, plugin: ModuleType | object, version: str = "") -> None:
        """Register a plugin object with pluggy; refuses one that implements hooks that do not exist."""
        if name in self.loaded:
            raise PluginError(f"a plugin named {name!r} is already loaded")
        self.pm.register(plugin, name=name)
        unknown = [caller.name for caller in self.pm.get_hookcallers(plugin) or [] if caller.spec is None]
        if unknown:
            self.pm.unregister(plugin)
            said = ", ".join(f"{n}{_did_you_mean(n)}" for n in unknown)
            raise PluginError(f"plugin {name!r} implements hooks that do not exist: {said}")
        self.loaded[name] = LoadedPlugin(name, version, plugin)

    def discover(self, extra_modules: Iterable[str] = (), disabled: Iterable[str] = ()) -> None:
        """Load entry-point plugins and the named modules, skipping disabled names. A plugin that fails
        is recorded in `failures` (and raises at the end under strict plugins)."""
        skip = set(disabled) | disabled_from_env()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in skip or ep.name in self.loaded:
                continue
            version = ep.dist.version if ep.dist is not None else ""
            self._import_and_add(ep.name, version, ep.load, f"entry point {ep.value}")
        for dotted in extra_modules:  # named explicitly: failing to import them is always an error
            if dotted in skip or dotted in self.loaded:
                continue
            try:
                module = importlib.import_module(dotted)
            except Exception as exc:
                raise PluginError(f"cannot import plugin module {dotted!r}: {exc!r}") from exc
            if self.pm.is_registered(module):
                continue  # also installed through an entry point: loaded once, under that name
            self.add(dotted, module, getattr(module, "__version__", ""))
        self.check()

    def _import_and_add(self, name: str, version: str, load: Any, what: str) -> None:
        try:
            self.add(name, load(), version)
        except PluginUnavailable as exc:
            self._fail(name, PluginState.UNAVAILABLE, "import", str(exc), version)
        except Exception as exc:  # a broken plugin is reported, never takes the others down
            self._fail(name, PluginState.FAILED, "import", f"{what} failed to import: {exc!r}", version)

    def _fail(self, name: str, state: PluginState, stage: str, error: str, version: str = "") -> None:
        if state is PluginState.FAILED:
            log.error("plugin %s failed (%s): %s", name, stage, error)
        else:
            log.info("plugin %s unavailable: %s", name, error)
        self.failures[name] = PluginFailure(name, state, stage, error, version)

    def register_all(self, plugin_config: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Run the registration hooks plugin by plugin. A plugin that fails is unregistered, what it
        added is removed, and the failure is recorded (and raised under strict plugins)."""
        plugin_config = plugin_config or {}
        for name, info in list(self.loaded.items()):
            rewards, backends = set(self.rewards.names()), set(self.sandbox_backends.names())
            try:
                self._register_one(name, info, dict(plugin_config.get(name, {})))
            except Exception as exc:
                self.envs.discard_plugin(name)
                self.rewards.discard(set(self.rewards.names()) - rewards)
                self.sandbox_backends.discard(set(self.sandbox_backends.names()) - backends)
                self.pm.unregister(info.module)
                del self.loaded[name]
                if isinstance(exc, PluginUnavailable):
                    self._fail(name, PluginState.UNAVAILABLE, "register", str(exc), info.version)
                else:
                    self._fail(name, PluginState.FAILED, "register", f"{exc!r}", info.version)
        self.envs.set_plugin("", "")
        self.pm.check_pending()
        self.check()

    def check(self) -> None:
        """Under strict plugins, raise PluginError naming every failed plugin."""
        failed = [f for f in self.failures.values() if f.state is PluginState.FAILED]
        if self.strict and failed:
            raise PluginError(
                "strict plugins: " + "; ".join(f"{f.name} ({f.stage}): {f.error}" for f in failed)
            )

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


def _did_you_mean(hook_name: str) -> str:
    close = difflib.get_close_matches(hook_name, HOOK_NAMES, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


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
    strict: bool | None = None,
) -> Plugins:
    """Discover and register every plugin (the server's view); strict=None: PALAESTRA_STRICT_PLUGINS."""
    plugins = Plugins(strict)
    plugins.discover(extra_modules, disabled)
    plugins.register_all(plugin_config)
    return plugins


def client_plugins(
    extra_modules: Iterable[str] = (), disabled: Iterable[str] = (), strict: bool | None = None
) -> Plugins:
    """Discover plugins without registering environments: the client-side hooks (scripted policies,
    text rendering, CLI subcommands) of every installed plugin and of `extra_modules`."""
    plugins = Plugins(strict)
    plugins.discover(extra_modules, disabled)
    plugins.pm.check_pending()
    return plugins
