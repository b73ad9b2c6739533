"""Code grading throughput and latency: the sandboxed grader vs a bare subprocess run of the same tests.

    python benchmarks/code_plugin.py [--levels 1,4,16] [--rounds 1] [--tasks 0] [--write]

Workload: the built-in problem set's Python reference solutions (function and stdin/stdout tasks), each
graded on all its public and hidden tests. One "graded submission" = lease a sandbox, write the code,
run every test through the supervisor (one process per test), release: what a single-turn episode pays.
The baseline in the same run does the least a grader can do without isolation: for stdio tests one bare
`python3 solution.py` per test with the input piped in; for function tests one `python3 -c` that imports the
solution and runs all the asserts in the same process (no sandbox, no per-test process, no integrity).
The Docker backend is measured too when an engine answers (DOCKER_HOST); otherwise its row says why not.
--write appends a `## Code` section to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from palaestra.plugins.code.grader import Grader
from palaestra.plugins.code.languages import get_language
from palaestra.plugins.code.supervisor import outputs_match
from palaestra.plugins.code.tasks import CodeTask, FunctionTest, IOTest, builtin_tasks
from palaestra.sandbox.manager import SandboxManager
from palaestra.sandbox.testing import docker_engine_problem

PY = get_language("python")
Row = dict[str, str]


async def grade_sandboxed(manager: SandboxManager, task: CodeTask, index: int) -> bool:
    async with await manager.lease("python", f"bench-{index}") as sandbox:
        report = await Grader(PY).grade(
            sandbox, task, task.reference["python"], task.public_tests + task.hidden_tests
        )
    return report.all_passed


async def _run(argv: list[str], stdin: str, cwd: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(stdin.encode())
    return proc.returncode or 0, out.decode()


async def grade_bare(task: CodeTask, index: int) -> bool:
    """No isolation, no integrity: the cheapest possible way to run the same tests."""
    tests = task.public_tests + task.hidden_tests
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as work:
        Path(work, "solution.py").write_text(task.reference["python"])
        if task.style == "stdio":
            ok = True
            for test in tests:
                assert isinstance(test, IOTest)
                code, out = await _run([sys.executable, "-I", "solution.py"], test.input, work)
                ok = ok and code == 0 and outputs_match(test.output, out, task.checker, task.float_tolerance)
            return ok
        body = "\n".join(t.code for t in tests if isinstance(t, FunctionTest))
        script = (
            "import sys; sys.path.insert(0, '.')\nfrom solution import *\nimport solution\n"
            f"candidate = solution.{task.entry_point}\n"
            "class raises:\n    def __init__(self, e): self.e = e\n    def __enter__(self): return self\n"
            "    def __exit__(self, k, v, t): return k is not None and issubclass(k, self.e)\n"
            "import types; pytest = types.SimpleNamespace(raises=raises); sys.modules['pytest'] = pytest\n"
            f"{task.setup_code}\n{body}\n"
            "for name, fn in list(globals().items()):\n"
            "    if name.startswith('test') and callable(fn): fn()\n"
        )
        code, _ = await _run([sys.executable, "-c", script], "", work)
        return code == 0


async def measure(
    label: str,
    grade: Callable[[CodeTask, int], Awaitable[bool]],
    tasks: list[CodeTask],
    level: int,
    rounds: int,
) -> Row:
    jobs = [task for _ in range(rounds) for task in tasks]
    slots = asyncio.Semaphore(level)
    latencies: list[float] = []
    failures = 0

    async def one(task: CodeTask, index: int) -> None:
        nonlocal failures
        async with slots:
            started = time.perf_counter()
            passed = await grade(task, index)
            latencies.append(time.perf_counter() - started)
            failures += not passed

    started = time.perf_counter()
    await asyncio.gather(*(one(task, i) for i, task in enumerate(jobs)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    row = {
        "mode": label,
        "concurrency": str(level),
        "submissions/s": f"{len(jobs) / elapsed:.2f}",
        "p50 ms": f"{statistics.median(latencies) * 1000:.0f}",
        "p99 ms": f"{p99 * 1000:.0f}",
        "full marks": f"{len(jobs) - failures}/{len(jobs)}",
    }
    print(" | ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


async def backend_rows(backend: str, tasks: list[CodeTask], levels: list[int], rounds: int) -> list[Row]:
    async with SandboxManager.for_tests(backend=backend, pool_size=0) as manager:

        async def grade(task: CodeTask, index: int) -> bool:
            return await grade_sandboxed(manager, task, index)

        return [
            await measure(f"sandboxed grader ({backend})", grade, tasks, level, rounds) for level in levels
        ]


async def main_async(args: argparse.Namespace) -> list[Row]:
    tasks = builtin_tasks()[: args.tasks or None]
    levels = [int(x) for x in args.levels.split(",")]
    rows = [
        await measure("bare subprocess (baseline)", grade_bare, tasks, level, args.rounds) for level in levels
    ]
    rows += await backend_rows("local", tasks, levels, args.rounds)
    problem = docker_engine_problem()
    if problem:
        print(f"docker: skipped ({problem})")
        rows.append(
            {
                "mode": "sandboxed grader (docker)",
                "concurrency": "-",
                "submissions/s": f"not measured: {problem}",
            }
        )
    else:
        rows += await backend_rows("docker", tasks, levels, args.rounds)
    return rows


def markdown(rows: list[Row], tasks: int, rounds: int) -> str:
    columns = ["mode", "concurrency", "submissions/s", "p50 ms", "p99 ms", "full marks"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
    ratios = []
    for level in {r["concurrency"] for r in rows if r["concurrency"] != "-"}:
        base = next(r for r in rows if r["concurrency"] == level and r["mode"].startswith("bare"))
        for row in rows:
            if row["concurrency"] == level and row["mode"].startswith("sandboxed"):
                ratio = float(row["submissions/s"]) / float(base["submissions/s"])
                ratios.append(f"{row['mode']} at {level}: {ratio:.2f}x the baseline's throughput")
    intro = (
        "\n## Code\n\n`python benchmarks/code_plugin.py --write`: grading the built-in set's Python "
        "reference "
        f"solutions ({tasks} tasks x {rounds} round(s), every public and hidden test), a sandbox leased and "
        "released per submission, against a bare-subprocess baseline in the same run (no isolation, no "
        f"per-test process, no integrity checks); {os.cpu_count()} CPUs.\n\n"
    )
    notes = (
        "\n\nRatios: " + "; ".join(sorted(ratios)) + ".\n"
        "The sandboxed grader pays for a fresh sandbox per submission, one supervisor process and one child "
        "process per test (the integrity design), and the nonce-tagged result channel; the baseline runs "
        "function tests of a task in one process.\n"
    )
    return intro + "\n".join(lines) + notes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=0, help="use only the first N built-in tasks (0: all)")
    parser.add_argument(
        "--write", action="store_true", help="append a ## Code section to docs/performance.md"
    )
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    count = len(builtin_tasks()[: args.tasks or None])
    text = markdown(rows, count, args.rounds)
    print(text)
    if args.write:
        path = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
