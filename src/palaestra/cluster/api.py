"""Start, watch and stop Palaestra replicas on a Ray cluster.

```python
import ray
from palaestra.cluster.api import RayCluster

ray.init(address="auto", namespace="palaestra")
cluster = RayCluster()
cluster.up()                         # one replica per alive node, pinned there, plus the directory
print(cluster.status())              # address, capacity and health of each replica
cluster.drain("replica-<node>")      # no new episodes there; its episodes go on
cluster.remove("replica-<node>")     # waits for its episodes to finish (or timeout), then stops it
cluster.down()                       # stops what `up` started
```

Replicas are Ray actors named `replica-<node id prefix>` in the namespace (`NAMESPACE`), scheduled with hard
node affinity and `max_restarts`: a replica that dies is restarted by Ray on its node, with a new port, and
reports itself to the directory again."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from palaestra.cluster import DIRECTORY_NAME, NAMESPACE
from palaestra.cluster.directory import Directory
from palaestra.cluster.replica import Replica


class ClusterError(RuntimeError):
    pass


class RayCluster:
    """Control of the replicas and the directory in one Ray namespace (Ray must be initialised)."""

    def __init__(self, namespace: str = NAMESPACE, directory_name: str = DIRECTORY_NAME) -> None:
        import ray

        if not ray.is_initialized():
            raise ClusterError("ray is not initialised: call ray.init(address=...) first")
        self.namespace = namespace
        self.directory_name = directory_name
        # Handles of what this object started: an actor that is not detached lives while its owner holds one.
        self.handles: dict[str, Any] = {}

    # ------------------------------------------------------------ up

    def directory(self, create: bool = False, detached: bool = False, stale_s: float = 3.0) -> Any:
        """The directory actor (made when `create` and missing)."""
        import ray

        try:
            return ray.get_actor(self.directory_name, namespace=self.namespace)
        except ValueError:
            if not create:
                raise ClusterError(
                    f"no directory {self.directory_name!r} in namespace {self.namespace!r}: run "
                    "`palaestra cluster up` first"
                ) from None
        options: dict[str, Any] = {
            "name": self.directory_name,
            "namespace": self.namespace,
            "num_cpus": 0,
            "max_restarts": -1,
            "get_if_exists": True,
        }
        if detached:
            options["lifetime"] = "detached"
        handle = ray.remote(Directory).options(**options).remote(stale_s)
        self.handles[self.directory_name] = handle
        return handle

    def up(
        self,
        *,
        nodes: Sequence[str] | None = None,
        host: str = "127.0.0.1",
        config_path: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        num_cpus: float = 0,
        max_restarts: int = 3,
        detached: bool = False,
        heartbeat_s: float = 0.5,
        stale_s: float = 3.0,
        timeout_s: float = 120.0,
    ) -> list[dict[str, Any]]:
        """Start one replica on each of `nodes` (default: every alive node without one), each bound to
        `host` ("node": each node's own IP, for clients on other machines; docs/deployment.md). Returns the
        directory's snapshot once every replica started has reported."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.directory(create=True, detached=detached, stale_s=stale_s)
        node_ids = list(nodes) if nodes is not None else [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        actor = ray.remote(Replica)
        started: list[tuple[str, Any]] = []
        for node_id in node_ids:
            name = replica_name(node_id)
            try:
                ray.get_actor(name, namespace=self.namespace)
                continue  # already up on this node
            except ValueError:
                pass
            options: dict[str, Any] = {
                "name": name,
                "namespace": self.namespace,
                "num_cpus": num_cpus,
                "max_restarts": max_restarts,
                "max_task_retries": 0,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            }
            if detached:
                options["lifetime"] = "detached"
            handle = actor.options(**options).remote(
                name,
                (self.directory_name, self.namespace),
                host=host,
                config_path=config_path,
                overrides=dict(overrides or {}),
                heartbeat_s=heartbeat_s,
            )
            started.append((name, handle))
            self.handles[name] = handle
        try:
            ray.get([handle.ping.remote() for _, handle in started], timeout=timeout_s)
        except Exception as exc:
            raise ClusterError(f"replicas did not start within {timeout_s} s: {exc}") from exc
        return self.status()

    # ------------------------------------------------------------ watch

    def status(self, include_unhealthy: bool = True) -> list[dict[str, Any]]:
        import ray

        snapshot: list[dict[str, Any]] = ray.get(self.directory().snapshot.remote(include_unhealthy))
        return snapshot

    def replica(self, replica_id: str) -> Any:
        import ray

        try:
            return ray.get_actor(replica_id, namespace=self.namespace)
        except ValueError:
            raise ClusterError(f"no replica {replica_id!r} in namespace {self.namespace!r}") from None

    def replica_ids(self) -> list[str]:
        return [entry["replica_id"] for entry in self.status()]

    def wait_for(
        self, predicate: Any, timeout_s: float = 60.0, period_s: float = 0.2
    ) -> list[dict[str, Any]]:
        """Poll the snapshot until `predicate(snapshot)` holds; ClusterError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            snapshot = self.status(include_unhealthy=False)
            if predicate(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the cluster did not reach the expected state in {timeout_s} s: {snapshot}"
                )
            time.sleep(period_s)

    # ------------------------------------------------------------ change

    def drain(self, replica_id: str) -> None:
        """New episodes go elsewhere; the replica's open episodes go on. The directory marks it draining
        (clients placing through it pass it over) and the replica's server refuses opens from now on
        (UNAVAILABLE, for clients that reach it otherwise); a replica Ray restarts later drains again."""
        import ray

        replica = self.replica(replica_id)  # ClusterError naming the replicas when there is no such one
        ray.get(self.directory().drain.remote(replica_id))
        with contextlib.suppress(Exception):  # dead now: its next report after a restart drains it
            ray.get(replica.drain.remote(), timeout=30)

    def remove(self, replica_id: str, timeout_s: float = 60.0, grace_s: float = 1.0) -> None:
        """Drain the replica, wait until its episodes are closed (at most `timeout_s`), then stop it for good
        (episodes still open then are closed and end as infrastructure failures on their clients)."""
        import ray

        self.drain(replica_id)
        handle = self.replica(replica_id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if ray.get(handle.ping.remote(), timeout=10)["open_episodes"] == 0:
                    break
            except Exception:
                break  # already dead
            time.sleep(0.2)
        ray.get(self.directory().remove.remote(replica_id))
        with contextlib.suppress(Exception):  # dead already: ray.kill below makes sure
            ray.get(handle.stop.remote(grace_s), timeout=30)
        ray.kill(handle, no_restart=True)

    def kill(self, replica_id: str, restart: bool = True) -> None:
        """Kill the replica's process at once (as a crash would); with `restart` Ray brings it back."""
        import ray

        ray.kill(self.replica(replica_id), no_restart=not restart)

    def down(self) -> None:
        """Stop every replica in the directory and the directory itself."""
        import ray

        try:
            directory = self.directory()
        except ClusterError:
            return
        for replica_id in [e["replica_id"] for e in ray.get(directory.snapshot.remote(True))]:
            try:
                handle = self.replica(replica_id)
            except ClusterError:
                continue
            with contextlib.suppress(Exception):
                ray.get(handle.stop.remote(1.0), timeout=30)
            ray.kill(handle, no_restart=True)
        ray.kill(directory, no_restart=True)
        self.handles.clear()


def replica_name(node_id: str) -> str:
    return f"replica-{node_id[:12]}"
