"""Cluster benchmark: echo throughput over 1, 2 and 3 Palaestra replicas on Ray, and routing overhead.

    python benchmarks/cluster.py [--quick] [--rounds N] [--episodes N] [--steps N] [--json results.json]

A simulated Ray cluster (`ray.cluster_utils.Cluster`: a head and two more nodes, loopback only) gets one
replica per node (`palaestra.cluster.api.RayCluster.up`). Then, per round, interleaved:
- direct: a plain `Client` on replica 1;
- routed-1: `Client([replica 1])`: the multi-replica view (a list of addresses) over one replica (its own
  overhead);
- routed-2, routed-3: `Client` over the addresses of 2 and 3 replicas;
- directory-3: `Client("directory:palaestra-directory")`: the same 3 replicas found through the directory.
Each scenario opens `--episodes` echo episodes (groups of 64), steps them all `--steps` times with
`step_many` (one message per replica per step), and closes them; only the stepping is timed.

All replicas share this machine's cores, so more replicas cannot give more steps/s here: the table reports
steps/s AND the CPU time each step costs, in the replicas (sum over the replica processes) and in the client
process; docs/scaling.md models N machines from those costs. Medians of `--rounds` rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

GROUP = 64
TURNS = 64  # echo episodes last this many turns; --steps stays below it


@contextmanager
def simulated_cluster(nodes: int) -> Iterator[Any]:
    tmp = tempfile.mkdtemp(prefix="palaestra-bench-ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    Path(tmp, "ray").mkdir()
    import ray
    from ray.cluster_utils import Cluster

    from palaestra.cluster.api import RayCluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address, namespace="palaestra", log_to_driver=False)
    control = RayCluster()
    try:
        control.up(overrides={"max_episodes": 8192, "max_episodes_per_client": 8192})
        yield control
    finally:
        try:
            control.down()
        finally:
            ray.shutdown()
            cluster.shutdown()


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def run_scenario(client: Any, episodes: int, steps: int, replica_pids: list[int]) -> dict[str, float]:
    ids = [
        e.episode_id
        for i in range(episodes // GROUP)
        for e in client.open("echo", seed=i, count=GROUP, options={"turns": TURNS})
    ]
    client.step_many({i: "warm up" for i in ids})
    replica_before, client_before = cpu_seconds(replica_pids), cpu_seconds([os.getpid()])
    start = time.perf_counter()
    for _ in range(steps):
        client.step_many({i: "hello there" for i in ids})
    elapsed = time.perf_counter() - start
    replica_cpu = cpu_seconds(replica_pids) - replica_before
    client_cpu = cpu_seconds([os.getpid()]) - client_before
    client.close(ids)
    total = len(ids) * steps
    return {
        "steps_per_s": total / elapsed,
        "replica_cpu_us_per_step": replica_cpu / total * 1e6,
        "client_cpu_us_per_step": client_cpu / total * 1e6,
    }


def directory_call_cost(control: Any, calls: int = 200) -> dict[str, float]:
    """Median round trip of the directory's two calls from this driver: a client's snapshot read and a
    replica's report (a heartbeat), in microseconds."""
    import ray

    directory = control.directory()
    entry = control.status()[0]
    info = {k: entry[k] for k in ("address", "node_id", "pid", "free_episodes", "open_episodes")}
    info.update(free_sandboxes=0, serving=True, reported_at=time.time())
    costs: dict[str, float] = {}
    for name, call in (
        ("snapshot", lambda: directory.snapshot.remote(False)),
        ("report", lambda: directory.report.remote("benchmark-replica", info)),
    ):
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            ray.get(call())
            times.append(time.perf_counter() - start)
        costs[name] = statistics.median(times) * 1e6
    ray.get(directory.remove.remote("benchmark-replica"))
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round, fewer steps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--episodes", type=int, default=1024, help="episodes stepped at once (multiple of 64)"
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    rounds, steps = (1, 10) if args.quick else (args.rounds, min(args.steps, TURNS - 2))

    from palaestra.agents.client import Client

    results: dict[str, list[dict[str, float]]] = {}
    with simulated_cluster(3) as control:
        replicas = sorted(control.status(include_unhealthy=False), key=lambda e: e["replica_id"])
        addresses = [e["address"] for e in replicas]
        pids = [e["pid"] for e in replicas]
        scenarios: dict[str, tuple[Callable[[], Any], list[int]]] = {
            "direct (Client, 1 replica)": (lambda: Client(addresses[0]), pids[:1]),
            "routed-1 (Client, [1 address])": (lambda: Client(addresses[:1]), pids[:1]),
            "routed-2 (Client, 2 addresses)": (lambda: Client(addresses[:2]), pids[:2]),
            "routed-3 (Client, 3 addresses)": (lambda: Client(addresses), pids),
            "directory-3 (Client, directory)": (lambda: Client("directory:palaestra-directory"), pids),
        }
        for round_index in range(rounds):
            for name, (make, used) in scenarios.items():
                with make() as client:
                    outcome = run_scenario(client, args.episodes, steps, used)
                results.setdefault(name, []).append(outcome)
                print(f"round {round_index + 1} {name}: {outcome['steps_per_s']:.0f} steps/s", flush=True)
        directory_us = directory_call_cost(control)

    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in results.items()
    }
    direct = medians["direct (Client, 1 replica)"]
    print()
    print(
        f"{args.episodes} echo episodes x {steps} steps, median of {rounds} round(s); {os.cpu_count()} cores"
    )
    print(f"{'scenario':40} {'steps/s':>10} {'replica CPU us/step':>20} {'client CPU us/step':>20}")
    for name, m in medians.items():
        print(
            f"{name:40} {m['steps_per_s']:>10.0f} {m['replica_cpu_us_per_step']:>20.1f} "
            f"{m['client_cpu_us_per_step']:>20.1f}"
        )
    routed = medians["routed-1 (Client, [1 address])"]
    overhead = direct["steps_per_s"] / routed["steps_per_s"] - 1
    print(f"routing overhead on one replica (direct vs routed-1 steps/s): {overhead * 100:+.1f}%")
    print(
        f"directory round trip (median of 200): snapshot {directory_us['snapshot']:.0f} us, "
        f"report {directory_us['report']:.0f} us"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "episodes": args.episodes,
                    "steps": steps,
                    "rounds": rounds,
                    "medians": medians,
                    "runs": results,
                    "routing_overhead": overhead,
                    "directory_us": directory_us,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
