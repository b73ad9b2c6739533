"""The sandbox manager: named profiles, backend choice per profile, leases per episode.

Usage from an environment (``ctx.sandboxes`` is the server's manager)::

    sandbox = await ctx.sandboxes.lease("python", ctx.episode_id, wall_seconds=5)
    try:
        await sandbox.write_file("main.py", "print(input()[::-1])")
        result = await sandbox.exec(["python3", "main.py"], stdin="abc")
        if result.infra_failure:
            raise InfraError("sandbox", result.detail)
        reversed_text = result.stdout  # "cba\\n"; result.status, exit_code, wall_seconds, *_truncated
    finally:
        await sandbox.release()

In tests or scripts without a server::

    manager = SandboxManager.create_default()      # or SandboxManager.for_tests(backend="local")
    async with manager:
        async with await manager.lease("python", "episode-1") as sandbox:
            ...

Configuration: the server's ``[sandbox]`` table::

    [sandbox]
    backend = "auto"          # auto | docker | local | a plugin's backend name
    allow_weaker_isolation = false  # may `auto` fall back to local, and local to `unshare`?
    pool_size = 4             # warm sandboxes per profile
    max_concurrent_creations = 4
    reap_interval_seconds = 60

    [sandbox.profiles.python]
    image = "palaestra/sandbox-python:2"
    network = false
    backend = "auto"          # overrides the table-wide choice for this profile
    limits = { wall_seconds = 10, memory_mb = 512, pids = 64 }

``auto`` picks Docker when an engine answers and the profile's image exists. Isolation is never weakened
silently: without Docker, ``auto`` uses the local backend only with ``allow_weaker_isolation = true``
(``backend = "local"`` chooses it explicitly), and the local backend uses ``unshare`` (the host file system
visible) instead of bubblewrap only with that flag too. Otherwise the profile is unavailable, with the
reason, and leases fail with it. `isolation(profile)` says what is in force. Lease failures raise
`SandboxError`, an infrastructure failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from palaestra.sandbox.api import Limits, Profile, Sandbox, SandboxBackend, SandboxError
from palaestra.sandbox.builtin import BUILTIN_BACKENDS
from palaestra.sandbox.images import image_for
from palaestra.sandbox.pool import with_limits

log = logging.getLogger("palaestra.sandbox")

BackendFactory = Any  # Callable[[dict[str, Any]], SandboxBackend]; kept loose for third-party factories

DEFAULT_PROFILES: dict[str, Profile] = {
    "python": Profile("python", image_for("python"), Limits()),
    "cpp": Profile(
        "cpp",
        image_for("cpp"),
        Limits(wall_seconds=20.0, cpu_seconds=20.0, memory_mb=1024, pids=128, workdir_mb=128),
    ),
}
LIMIT_NAMES = {f.name for f in fields(Limits)}


def parse_limits(table: Mapping[str, Any], base: Limits) -> Limits:
    unknown = set(table) - LIMIT_NAMES
    if unknown:
        raise ValueError(f"unknown sandbox limits {sorted(unknown)}; known: {sorted(LIMIT_NAMES)}")
    return base.with_overrides(**table)


def parse_profiles(config: Mapping[str, Any]) -> dict[str, Profile]:
    """The default profiles, overridden and extended by ``[sandbox.profiles.NAME]`` tables."""
    profiles = dict(DEFAULT_PROFILES)
    for name, table in dict(config.get("profiles", {})).items():
        base = profiles.get(name, Profile(name, table.get("image", ""), Limits()))
        image = table.get("image", base.image)
        if not image:
            raise ValueError(f"sandbox profile {name!r} needs an image")
        profiles[name] = Profile(
            name=name,
            image=image,
            limits=parse_limits(table.get("limits", {}), base.limits),
            network=bool(table.get("network", base.network)),
            backend=str(table.get("backend", base.backend)),
        )
    return profiles


class SandboxManager:
    """Leases sandboxes of named profiles, each profile served by one backend chosen at start."""

    def __init__(
        self, factories: Mapping[str, BackendFactory], config: Mapping[str, Any] | None = None
    ) -> None:
        self.config = dict(config or {})
        self.factories = dict(factories)
        self.profiles = parse_profiles(self.config)
        self.default_backend = str(self.config.get("backend", "auto"))
        self.allow_weaker_isolation = bool(self.config.get("allow_weaker_isolation", False))
        self.backends: dict[str, SandboxBackend] = {}
        self.choice: dict[str, str] = {}  # profile -> backend name
        self.problems: dict[str, str] = {}  # profile -> why it cannot be served
        self._started = False
        self._start_lock = asyncio.Lock()

    # -- construction helpers ------------------------------------------------------------------------

    @classmethod
    def from_registry(cls, registry: Any, config: Mapping[str, Any] | None = None) -> SandboxManager:
        """From a `SandboxBackendRegistry` filled by the plugins' hooks."""
        return cls({name: registry.get(name) for name in registry.names()}, config)

    @classmethod
    def create_default(cls, config: Mapping[str, Any] | None = None) -> SandboxManager:
        """The built-in backends (docker, local) with the given or default config; no plugins, no server."""
        return cls(BUILTIN_BACKENDS, config)

    @classmethod
    def for_tests(cls, backend: str = "local", pool_size: int = 0, **config: Any) -> SandboxManager:
        """A manager pinned to one backend with a small pool and no periodic reaping: for plugin tests."""
        settings = {"backend": backend, "pool_size": pool_size, "reap_interval_seconds": 0, **config}
        return cls.create_default(settings)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            for profile in self.profiles.values():
                self._choose_backend(profile)
            for unused in set(self.backends) - set(self.choice.values()):
                del self.backends[unused]  # e.g. docker probed by `auto` but serving nothing
            for name, backend in self.backends.items():
                served = {p: self.profiles[p] for p, b in self.choice.items() if b == name}
                configure = getattr(backend, "configure_profiles", None)
                if configure is not None:
                    configure(served)
                await backend.start()
            self._started = True

    async def shutdown(self) -> None:
        for backend in self.backends.values():
            try:
                await backend.shutdown()
            except Exception as exc:
                log.error("sandbox backend %s failed to shut down cleanly: %s", backend.name, exc)
        self._started = False
        self.backends.clear()
        self.choice.clear()

    async def __aenter__(self) -> SandboxManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def describe(self) -> dict[str, str]:
        """Profile -> the backend serving it ("unavailable: why" where none can)."""
        described = dict(self.choice)
        described.update({p: f"unavailable: {why}" for p, why in self.problems.items()})
        return described

    def isolation(self, profile: str) -> str:
        """The isolation in force for a profile, in words, e.g. "docker (hardened containers, ...)" or
        "unavailable: why". Valid once the manager has started."""
        if profile in self.problems:
            return f"unavailable: {self.problems[profile]}"
        if profile not in self.choice:
            known = profile in self.profiles
            return "not chosen yet (the manager has not started)" if known else "unknown sandbox profile"
        backend = self.backends[self.choice[profile]]
        describe = getattr(backend, "describe", None)
        return str(describe()) if callable(describe) else backend.name

    async def settle(self) -> None:
        """Wait for background clean-up of released sandboxes (for tests and benchmarks)."""
        for backend in self.backends.values():
            settle = getattr(backend, "settle", None)
            if settle is not None:
                await settle()

    # -- leasing -------------------------------------------------------------------------------------

    async def lease(self, profile: str, episode_id: str, **limit_overrides: Any) -> Sandbox:
        """A fresh sandbox of `profile` for one episode. Raises `SandboxError` when none can be had."""
        if not self._started:
            await self.start()
        if profile not in self.profiles:
            raise SandboxError(
                f"unknown sandbox profile {profile!r}; known: {', '.join(sorted(self.profiles))}"
            )
        if profile in self.problems:
            raise SandboxError(f"sandbox profile {profile!r} is unavailable: {self.problems[profile]}")
        try:
            chosen = with_limits(self.profiles[profile], **limit_overrides)
        except TypeError as exc:
            raise ValueError(f"unknown limit in {sorted(limit_overrides)}: {exc}") from exc
        backend = self.backends[self.choice[profile]]
        try:
            return await backend.lease(chosen, {"episode": episode_id, "profile": profile})
        except SandboxError:
            raise
        except Exception as exc:
            raise SandboxError(f"{backend.name}: lease of {profile!r} failed: {exc}") from exc

    # -- backend choice ------------------------------------------------------------------------------

    def _backend(self, name: str) -> SandboxBackend:
        if name not in self.backends:
            if name not in self.factories:
                raise SandboxError(
                    f"unknown sandbox backend {name!r}; known: {', '.join(sorted(self.factories))}"
                )
            self.backends[name] = self.factories[name](self.config)
        return self.backends[name]

    def _choose_backend(self, profile: Profile) -> None:
        wanted = profile.backend or self.default_backend
        try:
            name = self._auto_choice(profile) if wanted == "auto" else self._explicit_choice(wanted)
        except SandboxError as exc:
            self.problems[profile.name] = str(exc)
            log.error("sandbox profile %r cannot be served: %s", profile.name, exc)
            return
        self.choice[profile.name] = name
        backend = self.backends[name]
        description = getattr(backend, "describe", lambda: name)()
        log.info("sandbox profile %r uses backend %s (image %s)", profile.name, description, profile.image)

    def _explicit_choice(self, name: str) -> str:
        ok, why = self._backend(name).available()
        if not ok:
            raise SandboxError(f"backend {name!r} is not available: {why}")
        return name

    def _auto_choice(self, profile: Profile) -> str:
        reasons = []
        if "docker" in self.factories:
            docker = self._backend("docker")
            ok, why = docker.available()
            has_image = getattr(docker, "has_image", lambda image: True)
            if ok and has_image(profile.image):
                return "docker"
            reasons.append(why or f"image {profile.image} is missing (palaestra sandbox build)")
        if not self.allow_weaker_isolation:
            raise SandboxError(
                "docker is not usable (" + "; ".join(reasons) + "), and falling back to the weaker local "
                "backend is not allowed: start an engine, or set [sandbox] allow_weaker_isolation = true "
                '(or backend = "local")'
            )
        if "local" in self.factories:
            ok, why = self._backend("local").available()
            if ok:
                log.warning(
                    "sandbox profile %r: WEAKER ISOLATION, not using docker (%s), as allowed by the config",
                    profile.name,
                    "; ".join(reasons),
                )
                return "local"
            reasons.append(why)
        raise SandboxError("no sandbox backend available: " + "; ".join(reasons))
