"""Does recording episodes slow stepping down? The same workloads against a server without a trajectory
store and one with a store, interleaved round by round in one process run.

    python benchmarks/store.py [--rounds 5] [--episodes 200] [--json results.json]

A third server builds every step's trajectory entry but stores nothing: it separates the cost of
recording on the event loop from the writer thread's.

Workloads (each round, on each server):
* echo: `--episodes` episodes of 4 steps, one step per message (the cheapest environment: the recording
  overhead - building each step's trajectory entry and queueing the episode - shows most here);
* tools/shop: the scripted reference agent solving tasks (system prompt, tool schemas, tool calls and
  results, checklist items with evidence: the heaviest trajectories a chat episode records).
Figures: median step latency (p50), steps/s; the ratio with/without is the median of the per-round
ratios. Also: the writer thread's throughput (episodes written per second, batched, off the event loop).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from palaestra import types as t
from palaestra.agents.client import Client
from palaestra.plugins.tools import domain_for
from palaestra.plugins.tools.reference import scripted_policy
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig


def echo_round(address: str, episodes: int) -> tuple[float, float]:
    """(p50 step latency in us, steps/s) for `episodes` echo episodes stepped one message at a time."""
    latencies: list[float] = []
    with Client(address) as client:
        start = time.perf_counter()
        for _ in range(episodes):
            [step] = client.open("echo")
            while not step.done:
                began = time.perf_counter()
                step = client.step(step.episode_id, "not the word")
                latencies.append(time.perf_counter() - began)
            client.close(step.episode_id)
        elapsed = time.perf_counter() - start
    return 1e6 * statistics.median(latencies), len(latencies) / elapsed


def tools_round(address: str, episodes: int) -> tuple[float, float]:
    """(p50 step latency in us, steps/s) for the reference agent on tools/shop."""
    policy = scripted_policy("tools/shop")
    tasks = len(domain_for("tools/shop", {}).tasks())
    latencies: list[float] = []
    with Client(address) as client:
        start = time.perf_counter()
        for index in range(episodes):
            [step] = client.open("tools/shop", seed=index % tasks)
            history = [step.result.observation]
            while not step.done:
                action = policy(history)
                began = time.perf_counter()
                step = client.step(step.episode_id, action)
                latencies.append(time.perf_counter() - began)
                history.append(step.result.observation)
            client.close(step.episode_id)
        elapsed = time.perf_counter() - start
    return 1e6 * statistics.median(latencies), len(latencies) / elapsed


def writer_throughput(server: ServerThread) -> float:
    """Episodes per second the store's writer thread records (tools/shop trajectories, batched)."""
    assert server.server is not None and server.server.extras.recorder is not None
    recorder = server.server.extras.recorder
    recorder.flush()
    before = recorder.written
    with Client(server.address) as client:
        policy = scripted_policy("tools/shop")
        # Record one real tools/shop episode through the server...
        [step] = client.open("tools/shop", seed=0)
        history = [step.result.observation]
        while not step.done:
            step = client.step(step.episode_id, policy(history))
            history.append(step.result.observation)
        client.close(step.episode_id)
    recorder.flush()
    [record] = recorder.store.episodes(limit=1, with_trajectory=True)
    # ...then submit copies of it directly, as the hook would, and time how fast the writer drains them.
    summary = t.EpisodeSummary(
        episode_id="",
        env_id=record["env_id"],
        steps=record["steps"],
        agents=[],
        infra_failure=None,
        terminated=True,
        truncated=False,
        wall_seconds=record["wall_seconds"],
        env_seconds=record["env_seconds"],
        close_reason="client",
    )
    count = 2000
    summaries = [dataclasses.replace(summary, episode_id=f"bench-{i}") for i in range(count)]
    start = time.perf_counter()
    for copy in summaries:
        recorder.submit(copy, record["trajectory"], {})
    recorder.flush(timeout=300)
    elapsed = time.perf_counter() - start
    assert recorder.written - before >= count
    return count / elapsed


def cpu_costs() -> dict[str, float]:
    """Microseconds of CPU per step to build trajectory entries (on the event loop) and per episode to
    encode one for the database (in the writer thread), for a tools/shop reference episode and an echo
    episode: the recording's own cost, free of the noise of end-to-end timings on a shared machine."""
    import asyncio

    from palaestra.env import EnvContext
    from palaestra.plugins.echo import EchoEnv
    from palaestra.plugins.tools.chat_env import ToolChatEnv
    from palaestra.plugins.tools.reference import play, policy_for
    from palaestra.server.episodes import _trajectory_entry
    from palaestra.store.db import pack

    domain = domain_for("tools/shop", {})
    agent_results = asyncio.run(
        play(ToolChatEnv(domain, EnvContext("tools/shop", "x", task=3)), policy_for(domain))
    )
    echo = EchoEnv()
    echo_results = [echo.reset(0, {})] + [echo.step({"agent": t.Action(text="no")}) for _ in range(4)]
    costs = {}
    for name, results in (
        ("tools", [t.StepResult(agents={"agent": r}) for r in agent_results]),
        ("echo", echo_results),
    ):
        action = {"agent": t.Action(text="hello")}
        repeat = 2000
        began = time.perf_counter()
        for _ in range(repeat):
            trajectory = [_trajectory_entry(i, action, r, 0.0) for i, r in enumerate(results)]
        costs[f"{name}_entry_us_per_step"] = 1e6 * (time.perf_counter() - began) / repeat / len(results)
        began = time.perf_counter()
        for _ in range(repeat // 4):
            pack(trajectory)
        costs[f"{name}_encode_us_per_episode"] = 1e6 * (time.perf_counter() - began) / (repeat // 4)
    return {k: round(v, 1) for k, v in costs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=200, help="echo episodes per round")
    parser.add_argument("--tool-episodes", type=int, default=44, help="tools/shop episodes per round")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    rows: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain = ServerThread(ServerConfig(port=0)).start()
        stored = ServerThread(ServerConfig(port=0, store={"path": str(Path(tmp) / "bench.sqlite")})).start()
        # The middle case: trajectory entries built on every step, but nothing stores them (the cost of
        # recording on the event loop alone, without the writer thread).
        entries = ServerThread(ServerConfig(port=0)).start()
        assert entries.server is not None
        entries.server.runtime.record_trajectories = True
        servers = [("without", plain), ("entries only", entries), ("with", stored)]
        try:
            for _, server in servers:  # warm-up: imports, first connections
                echo_round(server.address, 20)
                tools_round(server.address, 4)
            for round_ in range(args.rounds):
                order = servers[round_ % 3 :] + servers[: round_ % 3]  # each goes first in turn
                for name, server in order:
                    rows.setdefault(f"echo {name}", []).append(echo_round(server.address, args.episodes))
                    rows.setdefault(f"tools {name}", []).append(
                        tools_round(server.address, args.tool_episodes)
                    )
            throughput = writer_throughput(stored)
        finally:
            for _, server in servers:
                server.stop()
    results: dict[str, Any] = {"rounds": args.rounds, "writer_episodes_per_s": round(throughput)}
    print(f"{'workload':<20} {'p50 step us':>12} {'steps/s':>10}   (median of {args.rounds} rounds)")
    for name, values in rows.items():
        p50 = statistics.median(v[0] for v in values)
        rate = statistics.median(v[1] for v in values)
        results[name] = {"p50_us": round(p50, 1), "steps_per_s": round(rate, 1)}
        print(f"{name:<20} {p50:>12.1f} {rate:>10.1f}")
    for workload in ("echo", "tools"):
        for name in ("entries only", "with"):
            ratios = [
                w[0] / wo[0]
                for w, wo in zip(rows[f"{workload} {name}"], rows[f"{workload} without"], strict=True)
            ]
            key = f"{workload}_p50_ratio" + ("_entries_only" if name == "entries only" else "")
            results[key] = round(statistics.median(ratios), 3)
            print(
                f"{workload}: p50 {name} / without = {statistics.median(ratios):.3f} (median of round ratios)"
            )
    print(f"writer: {throughput:.0f} tools/shop episodes/s recorded (batched, in its own thread)")
    results["cpu"] = cpu_costs()
    print("recording CPU cost:", ", ".join(f"{k} {v}" for k, v in results["cpu"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
