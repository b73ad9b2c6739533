"""The directory: one named Ray actor that knows every replica's address, capacity and health.

Replicas report themselves (a heartbeat every `period` seconds); a replica not heard from for `stale_s` is
unhealthy and left out of `snapshot()` (its episodes are already lost to the clients, whose streams broke).
When Ray restarts a replica it reports again under the same id with its new address and rejoins. A drained
replica stays listed, marked draining, and takes no new episodes: clients placing through the directory pass
it over, and the replica's server refuses opens itself (a replica Ray restarts after a drain is told to drain
again by the answer to its next report). A removed one is forgotten (its reports are ignored)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ReplicaRecord:
    replica_id: str
    address: str
    node_id: str
    pid: int
    free_episodes: int  # episode slots left: max_episodes - open episodes
    open_episodes: int
    free_sandboxes: int  # warm sandboxes ready in the replica's pools
    serving: bool  # the replica's own health (False once it stops)
    reported_at: float  # the replica's wall clock when it measured the above (clients discount later opens)
    incarnation: int = 0  # how many times the replica (re)started: 0 first, +1 per Ray restart
    draining: bool = False  # its server refuses new episodes (or the directory was told to drain it)
    opened: int = 0  # episodes the replica opened since it (re)started
    last_seen: float = field(default_factory=time.monotonic)


class Directory:
    """Plain class; `RayCluster` makes it a named Ray actor. All methods are quick and synchronous."""

    def __init__(self, stale_s: float = 3.0) -> None:
        self.stale_s = stale_s
        self.records: dict[str, ReplicaRecord] = {}
        self.removed: set[str] = set()
        self.draining: set[str] = set()

    def report(self, replica_id: str, info: dict[str, Any]) -> str:
        """A replica's heartbeat. Returns what the replica should do: "removed" (stop reporting), "drain"
        (it was drained but its server does not refuse opens: a restart) or "ok"."""
        if replica_id in self.removed:
            return "removed"
        old = self.records.get(replica_id)
        record = ReplicaRecord(replica_id=replica_id, **info)
        told = replica_id in self.draining
        answer = "drain" if told and not record.draining else "ok"
        record.draining = record.draining or told
        if old is not None:  # a new pid: Ray restarted it
            record.incarnation = old.incarnation + (old.pid != record.pid)
        self.records[replica_id] = record
        return answer

    def healthy(self, record: ReplicaRecord, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return record.serving and now - record.last_seen <= self.stale_s

    def snapshot(self, include_unhealthy: bool = False) -> list[dict[str, Any]]:
        """Replicas as dicts (address, capacity, health, draining, seconds since the last report)."""
        now = time.monotonic()
        out = []
        for record in sorted(self.records.values(), key=lambda r: r.replica_id):
            healthy = self.healthy(record, now)
            if healthy or include_unhealthy:
                entry = asdict(record)
                entry["healthy"] = healthy
                entry["age_s"] = round(now - record.last_seen, 3)
                del entry["last_seen"]
                out.append(entry)
        return out

    def drain(self, replica_id: str) -> None:
        """No new episodes on this replica (clients read it from the snapshot; `RayCluster.drain` also tells
        the replica, whose server then refuses opens); its episodes go on."""
        self.draining.add(replica_id)
        if replica_id in self.records:
            self.records[replica_id].draining = True

    def remove(self, replica_id: str) -> None:
        self.removed.add(replica_id)
        self.records.pop(replica_id, None)
