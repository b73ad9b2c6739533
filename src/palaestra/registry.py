"""Registries that plugins fill through their hooks: environments, reward functions, sandbox backends."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import jsonschema

from palaestra.env import EnvFactory, EnvRegistration
from palaestra.types import EnvSpec

if TYPE_CHECKING:
    from palaestra.sandbox.api import SandboxBackend


class RegistrationError(ValueError):
    """A plugin tried to register something twice, or something malformed."""


class EnvUnavailable(RuntimeError):
    """The id names an environment this server knows but cannot build here: an optional dependency is
    missing. The message says what to install. Clients get FAILED_PRECONDITION, not NOT_FOUND."""


class UnknownEnvironment(KeyError):
    def __init__(self, env_id: str, known: list[str], prefixes: Sequence[str] = (), reason: str = "") -> None:
        close = difflib.get_close_matches(env_id, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        shown = ", ".join(known[:80]) + (" ..." if len(known) > 80 else "")
        more = f" Also served on demand: ids starting with {', '.join(prefixes)}." if prefixes else ""
        why = f" ({reason})" if reason else ""
        super().__init__(f"unknown environment {env_id!r}{why}.{hint} Known environments: {shown}.{more}")
        self.env_id = env_id
        self.known = known

    def __str__(self) -> str:
        return str(self.args[0])


def check_spec(spec: EnvSpec) -> None:
    """Refuse a spec whose options schema is not a JSON Schema of an object, or whose reward components
    are declared twice or with an empty range."""
    schema = spec.options_schema
    if schema is not None:
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise RegistrationError(
                f"{spec.id}: options_schema is not a valid JSON Schema: {exc.message}"
            ) from None
        if schema.get("type") != "object":
            raise RegistrationError(f'{spec.id}: options_schema must describe an object ("type": "object")')
    names = [c.name for c in spec.reward_components]
    if len(set(names)) != len(names):
        raise RegistrationError(f"{spec.id}: reward components declared twice in {names}")
    for c in spec.reward_components:
        if c.low is not None and c.high is not None and c.low > c.high:
            raise RegistrationError(
                f"{spec.id}: reward component {c.name!r} has low {c.low} above high {c.high}"
            )


EnvResolver = Callable[[str], "tuple[EnvSpec, EnvFactory] | None"]


class EnvRegistry:
    """Environment ids to their spec and factory. Filled by `palaestra_register_environments`.

    Besides fixed ids, a plugin can add a resolver for an id prefix (e.g. ``gym/``) that builds the
    registration the first time an id under it is asked for, so "any installed Gymnasium id" works
    without creating every environment at start-up.
    """

    def __init__(self) -> None:
        self._entries: dict[str, EnvRegistration] = {}
        self._resolvers: dict[str, tuple[EnvResolver, str, str]] = {}
        self._current_plugin: tuple[str, str] = ("", "")

    def set_plugin(self, name: str, version: str) -> None:
        """Called by the plugin manager before each plugin's hook, to stamp its specs."""
        self._current_plugin = (name, version)

    def add(self, spec: EnvSpec, factory: EnvFactory) -> None:
        if spec.id in self._entries:
            owner = self._entries[spec.id].spec.plugin
            raise RegistrationError(
                f"environment id {spec.id!r} is already registered by plugin {owner!r}; "
                f"plugin {self._current_plugin[0]!r} cannot register it again"
            )
        check_spec(spec)
        if inspect.isclass(factory) and inspect.isabstract(factory):
            missing = ", ".join(sorted(getattr(factory, "__abstractmethods__", ())))
            raise RegistrationError(f"{spec.id}: {factory.__qualname__} does not implement {missing}")
        plugin, version = self._current_plugin
        if plugin and not spec.plugin:
            spec = replace(spec, plugin=plugin, plugin_version=version)
        self._entries[spec.id] = EnvRegistration(spec=spec, factory=factory)

    def add_resolver(self, prefix: str, resolver: EnvResolver) -> None:
        """Resolve ids starting with `prefix` on demand; the resolver returns None for ids it cannot serve,
        raises ValueError with a reason for ids it recognises but cannot build, and EnvUnavailable for ids
        whose optional dependency is not installed."""
        if prefix in self._resolvers:
            raise RegistrationError(f"id prefix {prefix!r} already has a resolver")
        self._resolvers[prefix] = (resolver, *self._current_plugin)

    def get(self, env_id: str) -> EnvRegistration:
        if env_id in self._entries:
            return self._entries[env_id]
        for prefix, (resolver, plugin, version) in self._resolvers.items():
            if env_id.startswith(prefix):
                try:
                    found = resolver(env_id)
                except ValueError as exc:
                    raise UnknownEnvironment(env_id, sorted(self._entries), reason=str(exc)) from None
                if found is not None:
                    spec, factory = found
                    check_spec(spec)
                    spec = replace(
                        spec, plugin=spec.plugin or plugin, plugin_version=spec.plugin_version or version
                    )
                    self._entries[env_id] = EnvRegistration(spec=spec, factory=factory)
                    return self._entries[env_id]
        raise UnknownEnvironment(env_id, sorted(self._entries), prefixes=sorted(self._resolvers))

    def discard_plugin(self, plugin: str) -> None:
        """Remove every environment and resolver a plugin added (its registration failed part-way)."""
        self._entries = {k: v for k, v in self._entries.items() if v.spec.plugin != plugin}
        self._resolvers = {k: v for k, v in self._resolvers.items() if v[1] != plugin}

    def __contains__(self, env_id: object) -> bool:
        return env_id in self._entries

    def __iter__(self) -> Iterator[EnvRegistration]:
        return iter(sorted(self._entries.values(), key=lambda r: r.spec.id))

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self) -> list[str]:
        return sorted(self._entries)


@dataclass
class RewardFunction:
    name: str
    fn: Callable[..., Any]  # sync or async; its signature is the contract between plugin and env
    description: str = ""


class RewardRegistry:
    """Named reward functions (verifiers, judges, process reward models) that environments look up."""

    def __init__(self) -> None:
        self._entries: dict[str, RewardFunction] = {}

    def add(self, name: str, fn: Callable[..., Any], description: str = "") -> None:
        if name in self._entries:
            raise RegistrationError(f"reward function {name!r} is already registered")
        self._entries[name] = RewardFunction(name, fn, description)

    def get(self, name: str) -> RewardFunction:
        if name not in self._entries:
            raise KeyError(f"unknown reward function {name!r}; known: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def discard(self, names: Iterable[str]) -> None:
        for name in names:
            self._entries.pop(name, None)


SandboxBackendFactory = Callable[[dict[str, Any]], "SandboxBackend"]


class SandboxBackendRegistry:
    """Backend names to factories taking the `[sandbox]` config table."""

    def __init__(self) -> None:
        self._entries: dict[str, SandboxBackendFactory] = {}

    def add(self, name: str, factory: SandboxBackendFactory) -> None:
        if name in self._entries:
            raise RegistrationError(f"sandbox backend {name!r} is already registered")
        self._entries[name] = factory

    def get(self, name: str) -> SandboxBackendFactory:
        if name not in self._entries:
            raise KeyError(f"unknown sandbox backend {name!r}; known: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def discard(self, names: Iterable[str]) -> None:
        for name in names:
            self._entries.pop(name, None)
