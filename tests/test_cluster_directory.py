"""The directory's bookkeeping, without Ray (the Ray-backed behaviour is in test_cluster.py)."""

from __future__ import annotations

import time

from palaestra.cluster.directory import Directory


def _info(pid: int = 1, address: str = "127.0.0.1:1", free: int = 10) -> dict[str, object]:
    return {
        "address": address,
        "node_id": "node-a",
        "pid": pid,
        "free_episodes": free,
        "open_episodes": 0,
        "free_sandboxes": 0,
        "serving": True,
        "reported_at": time.time(),
    }


def test_a_silent_replica_leaves_the_snapshot_and_a_restarted_one_rejoins() -> None:
    directory = Directory(stale_s=0.2)
    directory.report("a", _info())
    directory.report("b", _info(address="127.0.0.1:2"))
    assert [e["replica_id"] for e in directory.snapshot()] == ["a", "b"]
    time.sleep(0.3)
    directory.report("b", _info(address="127.0.0.1:2"))
    assert [e["replica_id"] for e in directory.snapshot()] == ["b"]  # a went silent
    [silent] = [e for e in directory.snapshot(include_unhealthy=True) if e["replica_id"] == "a"]
    assert not silent["healthy"] and silent["age_s"] >= 0.2
    directory.report("a", _info(pid=2, address="127.0.0.1:3"))  # Ray restarted it: new pid, new port
    [back] = [e for e in directory.snapshot() if e["replica_id"] == "a"]
    assert back["address"] == "127.0.0.1:3" and back["incarnation"] == 1
    directory.report("a", _info(pid=2, address="127.0.0.1:3"))
    assert next(e for e in directory.snapshot() if e["replica_id"] == "a")["incarnation"] == 1


def test_a_replica_that_is_not_serving_is_unhealthy() -> None:
    directory = Directory()
    directory.report("a", {**_info(), "serving": False})
    assert directory.snapshot() == []


def test_drain_keeps_the_replica_listed_and_remove_forgets_it() -> None:
    directory = Directory()
    directory.report("a", _info())
    directory.drain("a")
    assert directory.report("a", _info()) == "drain"  # a replica that does not refuse opens is told to
    assert directory.snapshot()[0]["draining"] is True
    assert directory.report("a", {**_info(), "draining": True}) == "ok"
    assert directory.snapshot()[0]["draining"] is True
    directory.remove("a")
    assert directory.snapshot(include_unhealthy=True) == []
    assert directory.report("a", _info()) == "removed"  # a removed replica is told to stop reporting
    assert directory.snapshot(include_unhealthy=True) == []
