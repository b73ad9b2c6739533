"""Tool-use environments: tool steps per second and episode latency, in-process vs over gRPC.

    python benchmarks/tools.py [--episodes 88] [--batch 16] [--write]

Workload: the scripted reference agent solving every task of `tools/shop` (JSON database) and
`tools/travel` (SQLite), repeated to `--episodes` per domain. Each step is one tool call or one reply; the
environment validates the call with jsonschema, runs it, and judges the checklist (dense mode).
Three ways to run the same episodes in the same process run:
* in-process: `ToolChatEnv` driven directly (the baseline: no transport at all);
* gRPC, one episode at a time: the client SDK against a real server (its own thread and event loop);
* gRPC, batched: `--batch` episodes stepped together, one `step_many` message per round.
--write appends a `## Tools` section to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from palaestra.agents.client import Client
from palaestra.env import EnvContext
from palaestra.plugins.tools import domain_for
from palaestra.plugins.tools.chat_env import ToolChatEnv
from palaestra.plugins.tools.reference import make_scripted_policy, play, policy_for
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig

ENVS = ("tools/shop", "tools/travel")


def task_indices(env_id: str, episodes: int) -> list[int]:
    n = len(domain_for(env_id, {}).tasks())
    return [i % n for i in range(episodes)]


def summarize(label: str, steps: int, seconds: float, latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "mode": label,
        "steps_per_s": steps / seconds,
        "episodes_per_s": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "steps": steps,
    }


async def in_process(env_id: str, tasks: list[int]) -> tuple[int, float, list[float]]:
    domain = domain_for(env_id, {})
    policy = policy_for(domain)
    steps, latencies = 0, []
    start = time.perf_counter()
    for task in tasks:
        began = time.perf_counter()
        env = ToolChatEnv(domain, EnvContext(env_id, "bench", task=task))
        results = await play(env, policy)
        await env.close()
        latencies.append(time.perf_counter() - began)
        steps += len(results) - 1
    return steps, time.perf_counter() - start, latencies


def over_grpc(client: Client, env_id: str, tasks: list[int]) -> tuple[int, float, list[float]]:
    steps, latencies = 0, []
    start = time.perf_counter()
    for task in tasks:
        began = time.perf_counter()
        policy = make_scripted_policy(env_id)
        [step] = client.open(env_id, task=task)
        while not step.done:
            step = client.step(step.episode_id, policy(step))
            steps += 1
        client.close(step.episode_id)
        latencies.append(time.perf_counter() - began)
    return steps, time.perf_counter() - start, latencies


def over_grpc_batched(
    client: Client, env_id: str, tasks: list[int], batch: int
) -> tuple[int, float, list[float]]:
    steps, latencies = 0, []
    start = time.perf_counter()
    for offset in range(0, len(tasks), batch):
        began = time.perf_counter()
        live: dict[str, Any] = {}
        for task in tasks[offset : offset + batch]:
            policy = make_scripted_policy(env_id)
            [step] = client.open(env_id, task=task)
            live[step.episode_id] = (policy, step)
        finished: list[str] = []
        while live:
            actions = {eid: policy(step) for eid, (policy, step) in live.items()}
            replies = client.step_many(actions)
            steps += len(replies)
            for eid, reply in replies.items():
                assert not isinstance(reply, Exception), reply
                live[eid] = (live[eid][0], reply)
                if reply.done:
                    finished.append(eid)
                    del live[eid]
        client.close(finished)
        elapsed = time.perf_counter() - began
        latencies += [elapsed] * len(finished)  # every episode of a batch ends within the batch's time
    return steps, time.perf_counter() - start, latencies


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| domain | mode | tool steps/s | episodes/s | episode p50 ms | episode p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['mode']} | {r['steps_per_s']:,.0f} | {r['episodes_per_s']:,.1f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=88)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    ratios: list[str] = []
    with ServerThread(ServerConfig(port=0, idle_timeout_s=600)) as server, Client(server.address) as client:
        for env_id in ENVS:
            tasks = task_indices(env_id, args.episodes)
            asyncio.run(in_process(env_id, sorted(set(tasks))))  # warm up: domain, expected states
            base = summarize("in-process", *asyncio.run(in_process(env_id, tasks)))
            one = summarize("gRPC, one episode at a time", *over_grpc(client, env_id, tasks))
            many = summarize(
                f"gRPC, {args.batch} episodes per step_many",
                *over_grpc_batched(client, env_id, tasks, args.batch),
            )
            for row in (base, one, many):
                rows.append({"env": env_id, **row})
            ratios.append(
                f"{env_id}: gRPC one-at-a-time / in-process steps/s = "
                f"{one['steps_per_s'] / base['steps_per_s']:.2f}x, "
                f"batched / in-process = {many['steps_per_s'] / base['steps_per_s']:.2f}x"
            )
    text = table(rows)
    print(text)
    print("\n".join(ratios))
    if args.write:
        section = (
            "\n\n## Tools\n\n"
            "`python benchmarks/tools.py --write`: the scripted reference agent solving every task of the "
            "shop (JSON) and travel (SQLite) domains; one step = one validated tool call or one reply, with "
            f"dense checklist judging. {args.episodes} episodes per domain and mode; the server runs in the "
            "same process on its own thread and event loop (loopback gRPC).\n\n"
            f"{text}\n\n" + "\n".join(f"- {r}" for r in ratios) + "\n"
            "\nIn-process is the env's own cost (validation, tool, checklist, outcome); the gRPC rows "
            "add the transport. Batched latency is the batch's wall time, shared by every episode in it.\n"
        )
        with Path(__file__).resolve().parent.parent.joinpath("docs", "performance.md").open("a") as f:
            f.write(section)


if __name__ == "__main__":
    main()
