"""The Docker backend: one hardened container per leased sandbox, warm pools, a runner reached over attach.

Every container is started with hard limits (memory = memory+swap, CPU, pids), a read-only root with
size-limited tmpfs mounts for /workspace and /tmp, ``network_mode="none"`` unless the profile allows a
network, all capabilities dropped, no-new-privileges and user 65534. Never privileged, never the Docker
socket inside. Its main process is the runner (`runner.py`), which the host reaches through one attach
stream (stdin/stdout, multiplexed by the engine), so a job costs no ``docker exec``.

No ``init``: the runner itself is the container's pid 1 and reaps orphans. Pid 1 holds the container's
stdio, i.e. the host's channel to the runner; docker-init would run as the sandbox user and be dumpable,
so a job could write into the channel through ``/proc/1/fd/1``. The runner is non-dumpable, so its fds are
out of a job's reach, and as pid 1 it receives no signal from inside the container that it does not handle.

Containers carry labels naming this server instance (host, pid and the pid's start time) and the profile;
warm containers learn their episode after hand-out through their name (labels are immutable), e.g.
``palaestra-<episode>-<id>``. A container stops and removes itself when its server is gone: the engine
closes the runner's stdin when the attach stream closes (``stdin_once``), the runner exits and
``auto_remove`` deletes the container. As a second line, at start-up and periodically the backend removes,
with their volumes, containers whose owning server process no longer exists.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import socket
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from palaestra.sandbox.api import Profile, SandboxError
from palaestra.sandbox.pool import RunnerBackend
from palaestra.sandbox.runner_client import (
    CONTROL_TIMEOUT,
    RUNNER_SOURCE,
    FrameSource,
    RunnerChannel,
    RunnerHandle,
)

log = logging.getLogger("palaestra.sandbox.docker")

T = TypeVar("T")

LABEL_MANAGED = "org.palaestra.managed"
LABEL_INSTANCE = "org.palaestra.instance"
LABEL_HOST = "org.palaestra.host"
LABEL_PID = "org.palaestra.pid"
LABEL_PID_START = "org.palaestra.pid-start"
LABEL_PROFILE = "org.palaestra.profile"
LABEL_EPISODE = "org.palaestra.episode"
SANDBOX_USER = "65534:65534"
# Options of `container_options` that configure the container (the others configure its host side).
CREATE_OPTIONS = frozenset({"image", "command", "user", "working_dir", "labels", "environment", "stdin_open"})
WORKDIR = "/workspace"
STDOUT_STREAM = 1


def process_start_time(pid: int) -> str:
    """The kernel's start time of a process (clock ticks since boot), or "" if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22; the command name (field 2) may contain spaces, so split after its closing parenthesis.
    return stat.rsplit(")", 1)[1].split()[19]


def owner_is_alive(labels: Mapping[str, str], hostname: str) -> bool:
    """Whether the server that created a container still runs; containers of other hosts count as alive."""
    if labels.get(LABEL_HOST) != hostname:
        return True
    try:
        pid = int(labels.get(LABEL_PID, "0"))
    except ValueError:
        return False
    return pid > 0 and process_start_time(pid) == labels.get(LABEL_PID_START)


class DemuxSource(FrameSource):
    """Reads the runner's stdout out of the engine's multiplexed attach stream (8-byte frame headers)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = bytearray()
        self.stderr_tail = b""

    async def readexactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            header = await self.reader.readexactly(8)
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            payload = await self.reader.readexactly(size)
            if stream == STDOUT_STREAM:
                self.buffer += payload
            else:
                self.stderr_tail = (self.stderr_tail + payload)[-4096:]
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


class DockerHandle(RunnerHandle):
    def __init__(self, backend: DockerBackend, container: Any, raw: Any, channel: RunnerChannel) -> None:
        self.backend = backend
        self.container = container
        self.raw = raw  # keeps docker-py's hijacked response (and so the socket) alive
        self.channel = channel
        self.ident = container.id[:12]
        self._destroyed = False

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        self.channel.close()
        await self.backend.remove_container(self.container)

    async def set_episode(self, episode_id: str) -> None:
        safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", episode_id)[:100]
        try:
            await self.backend.call(self.container.rename, f"palaestra-{safe}-{self.ident}")
        except Exception as exc:  # the name is informational; the labels already name the instance
            log.debug("could not rename %s: %s", self.ident, exc)


class DockerBackend(RunnerBackend):
    name = "docker"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__({"pool_size": 4, **config})
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.instance = str(config.get("instance") or f"{self.hostname}-{self.pid}")
        self.reap_interval = float(self.config.get("reap_interval_seconds", 60.0))
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=int(self.config.get("docker_threads", 16)), thread_name_prefix="docker"
        )
        self._client: Any = None
        self._reaper: asyncio.Task[None] | None = None

    # -- engine access -------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.from_env(
                timeout=int(self.config.get("docker_timeout", 60)), max_pool_size=32
            )
        return self._client

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def available(self) -> tuple[bool, str]:
        try:
            import docker  # noqa: F401
        except ImportError:
            return False, "docker-py is not installed (pip install palaestra[docker])"
        try:
            self.client.ping()
        except Exception as exc:
            self._client = None
            return False, f"no Docker engine answers ({exc})"
        return True, ""

    def has_image(self, image: str) -> bool:
        import docker.errors

        try:
            self.client.images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def describe(self) -> str:
        return "docker (hardened containers, warm pool)"

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.reap()
        await super().start()
        if self.reap_interval > 0:
            self._reaper = asyncio.create_task(self._reap_forever(), name="docker-reaper")

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        await super().shutdown()
        await self.call(self._remove_own_leftovers)
        self._executor.shutdown(wait=False)

    def labels_for(self, profile: Profile, episode: str) -> dict[str, str]:
        return {
            LABEL_MANAGED: "1",
            LABEL_INSTANCE: self.instance,
            LABEL_HOST: self.hostname,
            LABEL_PID: str(self.pid),
            LABEL_PID_START: process_start_time(self.pid),
            LABEL_PROFILE: profile.name,
            LABEL_EPISODE: episode,
        }

    def container_options(self, profile: Profile, episode: str) -> dict[str, Any]:
        limits = profile.limits
        # `exec`: compiled programs run from the work dir; uid/gid: the image's dir is root's.
        tmpfs = f"size={limits.workdir_mb}m,nr_inodes={limits.workdir_inodes},exec"
        return {
            "image": profile.image,
            "command": ["python3", "-I", "-S", "-c", RUNNER_SOURCE],
            "stdin_open": True,
            # The engine closes the runner's stdin when our one attach stream goes (this server died or lost
            # the engine): the runner exits, and the container removes itself. Nothing outlives its owner.
            "stdin_once": True,
            "auto_remove": True,
            "init": False,  # the runner is pid 1 (see the module's docstring)
            "user": SANDBOX_USER,
            "read_only": True,
            "tmpfs": {WORKDIR: f"{tmpfs},uid=65534,gid=65534,mode=0700", "/tmp": f"{tmpfs},mode=1777"},
            "working_dir": WORKDIR,
            "mem_limit": f"{limits.memory_mb}m",
            "memswap_limit": f"{limits.memory_mb}m",
            "nano_cpus": int(limits.cpus * 1e9),
            "pids_limit": limits.pids,
            "network_mode": "bridge" if profile.network else "none",
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "privileged": False,
            "labels": self.labels_for(profile, episode),
            "environment": {"PALAESTRA_SWEEP": "1", "PALAESTRA_WORKDIR": WORKDIR},
        }

    def _create_and_attach(self, options: dict[str, Any]) -> tuple[Any, Any]:
        api = self.client.api
        create = {k: v for k, v in options.items() if k in CREATE_OPTIONS}
        host = {k: v for k, v in options.items() if k not in CREATE_OPTIONS and k != "stdin_once"}
        config = api.create_container_config(
            detach=True, host_config=api.create_host_config(**host), **create
        )
        # docker-py sets StdinOnce only for containers it attaches to at creation; ours are detached.
        config["StdinOnce"] = bool(options.get("stdin_once"))
        created = api.create_container_from_config(config)
        container = self.client.containers.prepare_model({"Id": created["Id"]})
        try:
            api.start(container.id)
        except Exception:
            container.remove(force=True, v=True)
            raise
        try:
            raw = self.client.api.attach_socket(
                container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
        except Exception:
            container.remove(force=True, v=True)
            raise
        return container, raw

    async def start_runner(self, profile: Profile, labels: Mapping[str, str]) -> RunnerHandle:
        options = self.container_options(profile, labels.get("episode", ""))
        try:
            container, raw = await self.call(self._create_and_attach, options)
        except Exception as exc:
            raise SandboxError(f"docker: cannot start a {profile.name!r} container: {exc}") from exc
        sock = getattr(raw, "_sock", raw)
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        channel = RunnerChannel(DemuxSource(reader), writer)
        handle = DockerHandle(self, container, raw, channel)
        try:
            reply = await channel.call({"op": "ping"}, CONTROL_TIMEOUT)
        except Exception as exc:
            await handle.destroy()
            raise SandboxError(f"docker: sandbox runner did not start in {container.id[:12]}: {exc}") from exc
        if not reply.get("ok"):
            await handle.destroy()
            raise SandboxError(f"docker: runner refused ping: {reply}")
        return handle

    async def remove_container(self, container: Any) -> None:
        import docker.errors

        try:
            await self.call(container.remove, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: already being removed (auto_remove after the runner exited)
                log.warning("could not remove container %s: %s", container.id[:12], exc)
        except Exception as exc:  # the periodic reaper retries
            log.warning("could not remove container %s: %s", container.id[:12], exc)

    # -- reaping -------------------------------------------------------------------------------------

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                await self.reap()
            except Exception as exc:
                log.warning("reaping leftover sandboxes failed: %s", exc)

    async def reap(self) -> int:
        """Remove containers and volumes whose owning server died. Returns how many containers went."""
        try:
            return await self.call(self._reap_dead_owners)
        except SandboxError:
            raise
        except Exception as exc:
            raise SandboxError(f"docker: cannot list leftover sandboxes: {exc}") from exc

    def _reap_dead_owners(self) -> int:
        removed = 0
        for container in self._list_containers({"label": f"{LABEL_MANAGED}=1"}):
            labels = container.attrs.get("Labels") or {}
            if labels.get(LABEL_INSTANCE) == self.instance or owner_is_alive(labels, self.hostname):
                continue
            self._remove_quietly(container)
            removed += 1
        for volume in self.client.volumes.list(filters={"label": f"{LABEL_MANAGED}=1"}):
            if not owner_is_alive(volume.attrs.get("Labels") or {}, self.hostname):
                volume.remove(force=True)
        if removed:
            log.info("removed %d leftover sandbox containers of dead server instances", removed)
        return removed

    def _remove_own_leftovers(self) -> None:
        filters = {"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={self.instance}"]}
        for container in self._list_containers(filters):
            self._remove_quietly(container)

    def _list_containers(self, filters: Mapping[str, Any]) -> list[Any]:
        # Sparse: the list call's own fields (id, labels), no inspect per container, which fails with
        # NotFound when another process removes one of them meanwhile.
        return list(self.client.containers.list(all=True, filters=dict(filters), sparse=True))

    @staticmethod
    def _remove_quietly(container: Any) -> None:
        try:
            container.remove(force=True, v=True)
        except Exception as exc:
            log.debug("could not remove %s: %s", container.id[:12], exc)

    def managed_volumes(self) -> list[Any]:
        filters = {"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={self.instance}"]}
        return list(self.client.volumes.list(filters=filters))

    def managed_containers(self, *, instance_only: bool = True) -> list[Any]:
        labels = [f"{LABEL_MANAGED}=1"] + ([f"{LABEL_INSTANCE}={self.instance}"] if instance_only else [])
        return self._list_containers({"label": labels})
