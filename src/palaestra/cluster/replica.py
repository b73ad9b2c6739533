"""One Palaestra server replica inside a Ray actor: its own server, sandbox manager and pools.

The server runs on its own event loop thread (`ServerThread`), started in `__init__` so that a replica Ray
restarts (max_restarts) comes back serving without anyone calling it; a heartbeat thread reports address,
capacity and health to the directory actor. A drained replica's server refuses new episodes (UNAVAILABLE,
"replica draining: ...") while its open ones go on."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from palaestra.server.app import ServerThread
from palaestra.server.config import load_config

log = logging.getLogger(__name__)


class Replica:
    """Plain class; `RayCluster` makes it a Ray actor pinned to one node."""

    def __init__(
        self,
        replica_id: str,
        directory: tuple[str, str],
        *,
        host: str = "127.0.0.1",
        config_path: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        heartbeat_s: float = 0.5,
    ) -> None:
        import ray

        self.replica_id = replica_id
        # The directory by (name, namespace), not by handle: a handle in the constructor's arguments would
        # live in the object store, and a restart after losing it would fail.
        self.directory = ray.get_actor(directory[0], namespace=directory[1])
        self.heartbeat_s = heartbeat_s
        if host == "node":  # the node's own address, for clients on other machines (docs/deployment.md)
            host = ray.util.get_node_ip_address()
        config = load_config(config_path, {**dict(overrides or {}), "host": host, "port": 0})
        self.thread = ServerThread(config).start()
        self.node_id = ray.get_runtime_context().get_node_id()
        self._stop = threading.Event()
        self._report()  # registered before the constructor returns: `up` sees it at once
        self._beat = threading.Thread(target=self._beat_forever, name="palaestra-heartbeat", daemon=True)
        self._beat.start()

    @property
    def address(self) -> str:
        return self.thread.address

    def info(self) -> dict[str, Any]:
        server = self.thread.server
        assert server is not None
        runtime = server.runtime
        open_episodes = len(runtime.table)
        return {
            "address": self.address,
            "node_id": self.node_id,
            "pid": os.getpid(),
            "free_episodes": max(0, server.config.max_episodes - open_episodes),
            "open_episodes": open_episodes,
            "free_sandboxes": _free_sandboxes(server.sandboxes),
            "serving": not runtime.draining,  # a drained server still serves its open episodes
            "draining": runtime.drained,
            "opened": int(sum(s.value for s in _samples(runtime.metrics.episodes_opened, "_total"))),
            "reported_at": time.time(),
        }

    def _report(self) -> bool:
        """Report to the directory; False once removed from it. A drain it asks for is done here."""
        import ray

        answer = str(ray.get(self.directory.report.remote(self.replica_id, self.info()), timeout=30))
        if answer == "drain":
            self.drain()
        return answer != "removed"

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self._report():  # removed from the directory
                    return
            except Exception as exc:  # the directory is briefly unreachable: try again next beat
                log.warning("replica %s: heartbeat failed: %s", self.replica_id, exc)

    def ping(self) -> dict[str, Any]:
        return self.info()

    def drain(self) -> dict[str, Any]:
        """Refuse new episodes from now on (UNAVAILABLE "replica draining: ..."); the open ones go on."""
        server = self.thread.server
        assert server is not None
        server.drain()  # sets one attribute, which the server's loop reads at each open
        return self.info()

    def stop(self, grace: float = 1.0) -> None:
        """Drain and stop the server (episodes still open are closed)."""
        self._stop.set()
        self.thread.stop(grace)


def _samples(metric: Any, suffix: str) -> list[Any]:
    return [s for family in metric.collect() for s in family.samples if s.name.endswith(suffix)]


def _free_sandboxes(manager: Any) -> int:
    """Warm sandboxes ready in the manager's pools (0 without a sandbox layer or before any was used)."""
    if manager is None:
        return 0
    free = 0
    for backend in list(getattr(manager, "backends", {}).values()):
        for _, pool in list(getattr(backend, "pools", {}).values()):
            free += len(getattr(pool, "ready", ()))
    return free
