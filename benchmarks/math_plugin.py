"""Math verification throughput and latency: the worker pool (hard deadline) vs math-verify in-process.

    python benchmarks/math_plugin.py [--items 1500] [--workers 2] [--write]

Workload: answers to generated problems (arithmetic, fractions, linear, quadratic, word), half correct in
a different written form (\\frac vs a/b vs decimal, reordered root sets), half wrong. Each pair is
distinct, so no cache flatters the pool. Both sides verify the same extracted answers in the same run.
The in-process baseline calls math_verify.parse/verify with their own (signal) timeouts, which is what
a single-threaded script can do - and what a gRPC server's worker threads cannot.
--write appends a `## Math` section to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from fractions import Fraction
from pathlib import Path

from palaestra.plugins.math.checker import as_math_text
from palaestra.plugins.math.pool import VerifierPool
from palaestra.plugins.math.tasks import GENERATORS
from palaestra.types import ComponentStatus

logging.getLogger("math_verify").setLevel(logging.ERROR)


def restate(answer: str, index: int) -> str:
    """The same value written differently: a/b -> \\frac{a}{b} or a decimal; root lists reversed."""
    if ", " in answer:
        return ", ".join(reversed(answer.split(", ")))
    value = Fraction(answer)
    if value.denominator == 1:
        return f"{value.numerator}.0" if index % 3 == 0 else str(value.numerator)
    if index % 2 == 0:
        return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
    return f"{float(value):.10f}"


def workload(items: int) -> list[tuple[str, str, bool]]:
    kinds = sorted(GENERATORS)
    pairs = []
    for i in range(items):
        task = GENERATORS[kinds[i % len(kinds)]](i, 1 + i % 5, "bench")
        correct = i % 2 == 0
        if correct:
            pred = restate(task.answer, i)
        else:
            pred = task.answer.split(", ")[0] + "1" if ", " in task.answer else str(Fraction(task.answer) + 1)
        pairs.append((task.answer, pred, correct))
    return pairs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def in_process(pairs: list[tuple[str, str, bool]]) -> tuple[float, list[float], int]:
    from math_verify import parse, verify

    latencies, agree = [], 0
    started = time.perf_counter()
    for gold, pred, expected in pairs:
        t0 = time.perf_counter()
        ok = verify(parse(as_math_text(gold)), parse(as_math_text(pred)))
        latencies.append(time.perf_counter() - t0)
        agree += ok == expected
    return len(pairs) / (time.perf_counter() - started), latencies, agree


async def pool_throughput(
    pool: VerifierPool, pairs: list[tuple[str, str, bool]], in_flight: int
) -> tuple[float, list[float], int, int]:
    semaphore = asyncio.Semaphore(in_flight)
    latencies: list[float] = []
    agree = not_ok = 0

    async def one(gold: str, pred: str, expected: bool) -> None:
        nonlocal agree, not_ok
        async with semaphore:
            t0 = time.perf_counter()
            verdict = await pool.verify(gold, pred)
            latencies.append(time.perf_counter() - t0)
        agree += verdict.status is ComponentStatus.OK and verdict.correct == expected
        not_ok += verdict.status is not ComponentStatus.OK

    started = time.perf_counter()
    await asyncio.gather(*(one(*p) for p in pairs))
    return len(pairs) / (time.perf_counter() - started), latencies, agree, not_ok


async def pool_one_at_a_time(pool: VerifierPool, pairs: list[tuple[str, str, bool]]) -> list[float]:
    latencies = []
    for gold, pred, _ in pairs:
        t0 = time.perf_counter()
        await pool.verify(gold, pred)
        latencies.append(time.perf_counter() - t0)
    return latencies


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--deadline", type=float, default=5.0)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    pairs = workload(args.items)
    warmup = workload(50)
    in_process(warmup)
    base_rate, base_lat, base_agree = in_process(pairs)

    with VerifierPool(workers=args.workers, deadline_s=args.deadline) as pool:
        await pool_throughput(pool, warmup, args.in_flight)
        rate, lat, agree, not_ok = await pool_throughput(pool, pairs, args.in_flight)
        single = await pool_one_at_a_time(pool, pairs[:300])

    rows = [
        ("math-verify in-process, one thread", base_rate, base_lat, base_agree, 0),
        (
            f"worker pool ({args.workers} workers, {args.deadline:.0f}s hard deadline), "
            f"{args.in_flight} in flight",
            rate,
            lat,
            agree,
            not_ok,
        ),
        ("worker pool, one request at a time (latency only)", None, single, None, None),
    ]
    lines = [
        "| mode | verifications/s | p50 ms | p99 ms | agrees with expected | not OK |",
        "|---|---|---|---|---|---|",
    ]
    for name, r, latencies, agreed, failed in rows:
        rate_text = f"{r:.0f}" if r is not None else "-"
        agreed_text = f"{agreed}/{len(pairs)}" if agreed is not None else "-"
        failed_text = str(failed) if failed is not None else "-"
        p50, p99 = ms(statistics.median(latencies)), ms(percentile(latencies, 0.99))
        lines.append(f"| {name} | {rate_text} | {p50} | {p99} | {agreed_text} | {failed_text} |")
    table = "\n".join(lines)
    ratio = rate / base_rate
    summary = (
        f"{args.items} distinct (gold, answer) pairs from the generators, "
        "half correct in another written form; "
        f"{os.cpu_count()} CPUs. Pool / in-process throughput: {ratio:.2f}x."
    )
    print(table)
    print(summary)
    if args.write:
        section = (
            "\n## Math\n\n"
            "`python benchmarks/math_plugin.py --write`: math-verify equivalence checks, the killable worker "
            "pool "
            "with a hard per-item deadline vs calling math-verify in the calling thread, same run, "
            "same pairs.\n\n"
            f"{table}\n\n{summary}\n"
            "Latency under load includes queueing behind the in-flight requests; the one-at-a-time row "
            "is the pool's own overhead (IPC to a worker and back) on top of the verification.\n"
        )
        path = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
        with path.open("a", encoding="utf-8") as handle:
            handle.write(section)
        print(f"appended to {path}")


if __name__ == "__main__":
    asyncio.run(main())
