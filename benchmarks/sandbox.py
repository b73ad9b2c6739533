"""Sandbox benchmark: lease latency (warm vs cold), exec latency and throughput, baselines, leaks.

    python benchmarks/sandbox.py [--backend local|docker|all] [--rounds 10] [--write docs/performance.md]

Per backend: lease latency with an empty pool (cold) and from a filled warm pool; execution latency (p50/p99)
and executions/s for a trivial Python program and a small unittest file at concurrency 1, 4 and 16 (one
sandbox per concurrent client), plus the same programs at concurrency 1 with the runner's Python fast path
(its fork server) bypassed, so they start a real interpreter. Docker baselines measured in the same run:
`docker run --rm` per job and `docker exec` per job in a warm container. Leaks: processes/containers/volumes
left after shutdown. The load average is printed before and after: other work on the machine skews figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from palaestra.sandbox.images import image_for
from palaestra.sandbox.manager import SandboxManager
from palaestra.sandbox.testing import docker_engine_problem, wait_for_no_leftovers

TRIVIAL = ["python3", "-c", "print(1)"]
UNIT_TEST = """import unittest

def add(a, b):
    return a + b

class AddTest(unittest.TestCase):
    def test_small(self):
        self.assertEqual(add(2, 3), 5)

    def test_negative(self):
        self.assertEqual(add(-2, -3), -5)

if __name__ == "__main__":
    unittest.main()
"""
UNIT = ["python3", "test_add.py"]
# CPython ignores this variable, but the runner execs a real interpreter for any PYTHON* variable it sets.
BYPASS_FAST_PATH = {"PYTHON_BENCH_BYPASS_FORK_SERVER": "1"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def lease_latency(backend: str, rounds: int) -> tuple[float, float]:
    cold_manager = SandboxManager.for_tests(backend=backend, pool_size=0)
    async with cold_manager:
        cold = []
        for i in range(rounds):
            start = time.perf_counter()
            sandbox = await cold_manager.lease("python", f"cold-{i}")
            cold.append(time.perf_counter() - start)
            await sandbox.release()
    warm_manager = SandboxManager.for_tests(backend=backend, pool_size=2)
    async with warm_manager:
        warm = []
        for i in range(rounds):
            await asyncio.sleep(1.0)  # let the pool refill, as between episodes
            start = time.perf_counter()
            sandbox = await warm_manager.lease("python", f"warm-{i}")
            warm.append(time.perf_counter() - start)
            await sandbox.release()
    return statistics.median(cold), statistics.median(warm)


async def exec_figures(
    manager: SandboxManager, argv: list[str], concurrency: int, per_client: int, env: dict[str, str]
) -> dict[str, float]:
    sandboxes = await asyncio.gather(*(manager.lease("python", f"bench-{i}") for i in range(concurrency)))
    for sandbox in sandboxes:
        await sandbox.write_file("test_add.py", UNIT_TEST)
        await sandbox.exec(argv, env=env)  # warm-up
    await quiesce(manager)
    latencies: list[float] = []
    failures = 0

    async def client(sandbox: object) -> None:
        nonlocal failures
        for _ in range(per_client):
            start = time.perf_counter()
            result = await sandbox.exec(argv, env=env)  # type: ignore[attr-defined]
            latencies.append(time.perf_counter() - start)
            failures += not result.ok

    start = time.perf_counter()
    await asyncio.gather(*(client(sb) for sb in sandboxes))
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(sb.release() for sb in sandboxes))
    return {
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "per_s": len(latencies) / elapsed,
        "failures": failures,
    }


async def quiesce(manager: SandboxManager, bound_seconds: float = 30.0) -> None:
    """Let background work finish (released sandboxes removed, warm pools refilled): time executions only."""
    await manager.settle()
    deadline = time.monotonic() + bound_seconds
    for backend in manager.backends.values():
        for _profile, pool in getattr(backend, "pools", {}).values():
            while (pool.creating or len(pool.ready) < pool.size) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the new sandboxes' runners and fork servers finish starting


def docker_baselines(rounds: int) -> dict[str, float]:
    import docker

    client = docker.from_env()
    image = image_for("python")
    run_times = []
    for _ in range(max(3, rounds // 2)):
        start = time.perf_counter()
        subprocess.run(
            ["docker", "run", "--rm", "--network", "none", image, *TRIVIAL], check=True, capture_output=True
        )
        run_times.append(time.perf_counter() - start)
    container = client.containers.run(image, ["sleep", "infinity"], detach=True, network_mode="none")
    try:
        exec_times = []
        for _ in range(rounds * 2):
            start = time.perf_counter()
            container.exec_run(TRIVIAL)
            exec_times.append(time.perf_counter() - start)
    finally:
        container.remove(force=True, v=True)
    return {
        "docker_run_p50_ms": statistics.median(run_times) * 1000,
        "docker_exec_p50_ms": statistics.median(exec_times) * 1000,
        "docker_exec_per_s": 1 / statistics.mean(exec_times),
    }


async def bench_backend(backend: str, rounds: int) -> list[str]:
    lines = [f"### Backend `{backend}`", ""]
    cold, warm = await lease_latency(backend, rounds)
    lines.append(f"- lease latency p50: cold {cold * 1000:.0f} ms, warm {warm * 1000:.1f} ms")
    if backend == "docker":
        base = docker_baselines(rounds)
        lines.append(
            f"- baselines (same run): `docker run --rm` per job p50 {base['docker_run_p50_ms']:.0f} ms; "
            f"`docker exec` per job p50 {base['docker_exec_p50_ms']:.0f} ms "
            f"({base['docker_exec_per_s']:.0f}/s sequential)"
        )
    lines += [
        "",
        "| program | concurrency | p50 ms | p99 ms | execs/s | failures |",
        "|---|---|---|---|---|---|",
    ]
    manager = SandboxManager.for_tests(backend=backend, pool_size=4, max_concurrent_creations=8)
    async with manager:
        for name, argv in (("trivial python", TRIVIAL), ("unittest file", UNIT)):
            # The same program with the fork server bypassed right after its concurrency-1 row: the
            # machine's other load changes less between the two than across the whole run.
            bypassed = f"{name}, no fast path"
            runs = [(name, 1, {}), (bypassed, 1, BYPASS_FAST_PATH), (name, 4, {}), (name, 16, {})]
            for label, concurrency, env in runs:
                per_client = max(rounds, 48 // concurrency)
                f = await exec_figures(manager, argv, concurrency, per_client, env)
                lines.append(
                    f"| {label} | {concurrency} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} | "
                    f"{f['per_s']:.0f} | {f['failures']:.0f} |"
                )
                print(lines[-1], flush=True)
        backends = dict(manager.backends)
    counts = await wait_for_no_leftovers(backends)
    lines += ["", f"- leaks after shutdown: {counts}", ""]
    return lines


def load_average() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="all", choices=["all", "local", "docker"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--write", help="append the figures to this markdown file")
    args = parser.parse_args()
    backends = ["local", "docker"] if args.backend == "all" else [args.backend]
    lines = [
        "## Sandboxes",
        "",
        "`python benchmarks/sandbox.py` on the 2-core development machine (shared).",
        "",
        f"- load average at start: {load_average()}",
    ]
    for backend in backends:
        if backend == "docker" and docker_engine_problem():
            lines += [f"### Backend `docker`: skipped ({docker_engine_problem()})", ""]
            continue
        lines += await bench_backend(backend, args.rounds)
    lines.append(f"- load average at the end: {load_average()}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with Path(args.write).open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    asyncio.run(main())
