"""Warm pools and the shared lease/release logic of runner-based backends (Docker, local)."""

from __future__ import annotations

import abc
import asyncio
import collections
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from palaestra.sandbox.api import Limits, Profile, Sandbox, SandboxBackend, SandboxError
from palaestra.sandbox.runner_client import HandleFactory, RunnerHandle, RunnerSandbox

log = logging.getLogger("palaestra.sandbox")

# Limits fixed when a sandbox starts; the others are applied per job by the runner.
START_TIME_LIMITS = ("memory_mb", "pids", "workdir_mb", "workdir_inodes", "cpus")


def same_start_limits(a: Limits, b: Limits) -> bool:
    return all(getattr(a, name) == getattr(b, name) for name in START_TIME_LIMITS)


class WarmPool:
    """A bounded set of started, idle runners for one profile. A runner is handed out once, never reused."""

    def __init__(self, name: str, factory: HandleFactory, size: int, create_slots: asyncio.Semaphore) -> None:
        self.name = name
        self.factory = factory
        self.size = size
        self.create_slots = create_slots
        self.ready: collections.deque[RunnerHandle] = collections.deque()
        self.creating = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        self.discarded: set[asyncio.Task[None]] = set()  # unhealthy runners being destroyed

    def start(self) -> None:
        if self.size > 0 and self._task is None:
            self._task = asyncio.create_task(self._refill_forever(), name=f"warm-pool-{self.name}")
            self._wake.set()

    async def take(self) -> RunnerHandle | None:
        """A healthy warm runner, or None when the pool is empty."""
        while self.ready:
            handle = self.ready.popleft()
            self._wake.set()
            if await handle.ping():
                return handle
            log.warning("warm sandbox %s failed its health check; discarding it", handle.ident)
            self.discarded.add(asyncio.create_task(handle.destroy()))
        self._wake.set()
        return None

    async def create(self) -> RunnerHandle:
        async with self.create_slots:
            return await self.factory()

    async def _refill_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            deficit = self.size - len(self.ready) - self.creating
            if deficit <= 0:
                continue
            self.creating += deficit
            results = await asyncio.gather(*(self.create() for _ in range(deficit)), return_exceptions=True)
            self.creating -= deficit
            for result in results:
                if isinstance(result, RunnerHandle):
                    self.ready.append(result)
                else:
                    self.failures += 1
                    log.error("warm pool %s could not start a sandbox: %s", self.name, result)
            if any(not isinstance(r, RunnerHandle) for r in results):
                await asyncio.sleep(min(30.0, 0.5 * self.failures))  # back off from a failing daemon
                self._wake.set()

    async def close(self) -> list[RunnerHandle]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        handles = list(self.ready)
        self.ready.clear()
        return handles


class RunnerBackend(SandboxBackend):
    """Lease/release with per-profile warm pools; subclasses start and destroy runners."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.pool_size = int(self.config.get("pool_size", 2))
        self.create_slots = asyncio.Semaphore(int(self.config.get("max_concurrent_creations", 4)))
        self.pools: dict[str, tuple[Profile, WarmPool]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self.profiles: Mapping[str, Profile] = {}

    @abc.abstractmethod
    async def start_runner(self, profile: Profile, labels: Mapping[str, str]) -> RunnerHandle:
        """Start one sandbox with its runner, ping it, and return its handle."""

    def configure_profiles(self, profiles: Mapping[str, Profile]) -> None:
        """The profiles this backend serves (set by the manager before `start`): they get warm pools."""
        self.profiles = profiles

    async def start(self) -> None:
        """Nothing starts here: a profile's warm pool starts with its first lease (`_obtain`), so a server
        that only lists its catalog, or whose clients never use a profile, starts no sandbox."""

    def _pool_for(self, profile: Profile) -> WarmPool:
        if profile.name not in self.pools:

            async def factory(p: Profile = profile) -> RunnerHandle:
                return await self.start_runner(p, {"episode": ""})

            pool = WarmPool(profile.name, factory, self.pool_size, self.create_slots)
            self.pools[profile.name] = (profile, pool)
        return self.pools[profile.name][1]

    async def lease(self, profile: Profile, labels: Mapping[str, str]) -> Sandbox:
        episode = labels.get("episode", "")
        handle = await self._obtain(profile, labels)
        if episode:
            self._in_background(handle.set_episode(episode))

        async def replacement() -> RunnerHandle:
            return await self._cold(profile, labels)

        return RunnerSandbox(profile, profile.limits, handle, replacement, self._release_handle)

    async def _obtain(self, profile: Profile, labels: Mapping[str, str]) -> RunnerHandle:
        configured = self.profiles.get(profile.name)
        if configured is not None and profile.name not in self.pools:
            self._pool_for(configured).start()  # lazily, on the profile's first lease
        pooled = self.pools.get(profile.name)
        if pooled is not None and same_start_limits(pooled[0].limits, profile.limits):
            handle = await pooled[1].take()
            if handle is not None:
                return handle
        return await self._cold(profile, labels)

    async def _cold(self, profile: Profile, labels: Mapping[str, str]) -> RunnerHandle:
        try:
            async with self.create_slots:
                return await self.start_runner(profile, labels)
        except SandboxError:
            raise
        except Exception as exc:
            raise SandboxError(f"{self.name}: cannot start a {profile.name!r} sandbox: {exc}") from exc

    async def _release_handle(self, handle: RunnerHandle) -> None:
        self._in_background(handle.destroy())

    def _in_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def settle(self) -> None:
        """Wait until background destruction and renaming have finished."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def shutdown(self) -> None:
        idle: list[RunnerHandle] = []
        for _, pool in self.pools.values():
            idle += await pool.close()
        for handle in idle:
            self._in_background(handle.destroy())
        await self.settle()


def with_limits(profile: Profile, **overrides: Any) -> Profile:
    return replace(profile, limits=profile.limits.with_overrides(**overrides)) if overrides else profile
