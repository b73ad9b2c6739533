"""Helpers for tests of the sandbox layer and of plugins that use it.

`docker_or_skip()` skips a test when no Docker engine answers, except under ``CI=true``, where a missing
engine is a failure (CI must exercise the real engine).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from palaestra.sandbox.images import IMAGES, build_images
from palaestra.sandbox.local import UID_LOCK_DIR


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def docker_engine_problem() -> str:
    """Why no Docker engine can be used here, or "" when one answers."""
    try:
        import docker
    except ImportError:
        return "docker-py is not installed"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Docker engine reachable (DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')}): {exc}"
    return ""


def docker_or_skip() -> None:
    """Skip (or fail under CI=true) when no engine answers; build the profile images when missing."""
    import pytest

    problem = docker_engine_problem()
    if problem:
        if running_in_ci():
            pytest.fail(f"CI=true but {problem}; start one with .ci/docker-up.sh")
        pytest.skip(problem)
    build_images(list(IMAGES))  # a no-op when the images exist


def processes_of_uids(uids: set[int]) -> list[int]:
    """Pids of host processes running as any of `uids` (the local backend's per-sandbox users)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid not in uids:
                continue
            # Zombies run nothing; an orphaned namespace init waits there for the host's pid 1 to reap it.
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


def unclaimed_uids(uids: set[int]) -> set[int]:
    """Those of `uids` no live sandbox holds now: another server on this host may reuse a released uid."""
    free = set()
    for uid in uids:
        try:
            fd = os.open(UID_LOCK_DIR / str(uid), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            free.add(uid)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free.add(uid)
        except BlockingIOError:
            continue
        finally:
            os.close(fd)
    return free


def leftovers(backends: Mapping[str, Any]) -> dict[str, int]:
    """What backends still hold on the host: processes (local), containers and volumes (docker)."""
    counts: dict[str, int] = {}
    for name, backend in backends.items():
        if name == "local":
            counts["local_processes"] = len(processes_of_uids(unclaimed_uids(backend.used_uids)))
        elif name == "docker":
            counts["containers"] = len(backend.managed_containers())
            counts["volumes"] = len(backend.managed_volumes())
    return counts


async def wait_for_no_leftovers(backends: Mapping[str, Any], bound_seconds: float = 10.0) -> dict[str, int]:
    """Poll `leftovers` until all are gone (killed namespaces die asynchronously) or the bound passes."""
    deadline = time.monotonic() + bound_seconds
    while True:
        counts = leftovers(backends)
        if not any(counts.values()) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.05)
