"""Grading a submission in a sandbox: compile (if the language needs it), then run the supervisor.

Order matters for integrity: the submission is written and compiled BEFORE any test data enters the
sandbox (a C++ `#include "../tests.json"` would otherwise embed hidden data into the binary). The test
data then goes into a fresh randomly named directory together with the supervisor, which loads it,
deletes it and only then starts the submission (see supervisor.py).

Whose failure (docs/sandboxes.md, "Threat model"): whatever goes wrong while a submission runs is the
submission's failure, with its reason, unless a check the submission cannot influence fails: the sandbox
layer cannot reach or replace the sandbox (`SANDBOX_ERROR`), the sandbox fails a health check run after
every process of the submission is gone (`Sandbox.check_health`), or the kernel's counters show the host
starved the grading of CPU (`overload`). Only those raise `InfraError`.
"""

from __future__ import annotations

import inspect
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palaestra.env import InfraError
from palaestra.plugins.code.languages import Language, fill
from palaestra.plugins.code.supervisor import remove_tree
from palaestra.plugins.code.tasks import CodeTask, FunctionTest, IOTest, Test
from palaestra.sandbox.api import ExecResult, ExecStatus, Sandbox, SandboxError

SUPERVISOR_SOURCE = Path(__file__).with_name("supervisor.py").read_text(encoding="utf-8")
PASS = "pass"
NOT_RUN = "not_run"
COMPILE_ERROR = "compile_error"


@dataclass
class TestOutcome:
    __test__ = False  # not a pytest class

    name: str
    status: str  # pass | fail | error | timeout | memory | output_limit | crash | compile_error | not_run
    message: str = ""
    expected: str = ""
    got: str = ""
    input: str = ""
    stderr: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASS


@dataclass
class GradeReport:
    outcomes: list[TestOutcome] = field(default_factory=list)
    compiled: bool = True
    compile_output: str = ""

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total

    @property
    def timed_out(self) -> list[str]:
        return [o.name for o in self.outcomes if o.status == "timeout"]

    def subset(self, start: int, stop: int) -> GradeReport:
        return GradeReport(self.outcomes[start:stop], self.compiled, self.compile_output)


@dataclass(frozen=True)
class GraderSettings:
    python: str = "python3"  # interpreter for the supervisor (and `{python}` in run commands)
    wall_factor: float = 5.0  # wall backstop = time limit * factor + 1 s (CPU time is the real limit)
    report_chars: int = 400  # per reported field
    output_limit: int = 8 << 20  # bytes a test's program may write


def _check_exec(result: ExecResult, what: str) -> ExecResult:
    if result.status is ExecStatus.SANDBOX_ERROR:
        raise InfraError("sandbox", f"{what} failed in the sandbox: {result.detail or result.stderr[-500:]}")
    return result


async def _write(sandbox: Sandbox, path: str, data: str, python: str, keep: Sequence[str] = ()) -> None:
    """Write a file for the grader. A work dir that programs of the job filled (disk or inodes) is emptied
    (by the sandbox's `python`), but for `keep`, and the write retried: only a write into an emptied sandbox
    that fails is the infrastructure's."""
    try:
        await sandbox.write_file(path, data)
        return
    except SandboxError as exc:
        raise InfraError("sandbox", f"writing {path}: {exc}") from exc
    except OSError as exc:
        first = exc
    try:
        await run_checked(sandbox, [python, "-I", "-S", "-c", RECLAIM_SOURCE, *keep], "emptying the work dir")
        await sandbox.write_file(path, data)
    except (SandboxError, OSError) as exc:
        raise InfraError(
            "sandbox", f"writing {path} failed ({first}), and again after emptying the work dir: {exc}"
        ) from exc


# Removes everything in the work dir and /tmp but the paths given (relative to the work dir), with the
# supervisor's own `remove_tree` (any mode, any depth, no symlink followed): one removal routine for both.
# Run between jobs, when nothing of the job runs any more, as `python -c` (the supervisor's file may not fit
# on a full disk).
RECLAIM_SOURCE = f"""
import os, stat, sys
{inspect.getsource(remove_tree)}
keep = {{os.path.normpath(os.path.join(os.getcwd(), k)) for k in sys.argv[1:]}}
for root in (os.getcwd(), "/tmp"):
    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        if path not in keep:
            try:
                remove_tree(path)
            except OSError:
                pass
"""


async def run_checked(
    sandbox: Sandbox, argv: list[str], what: str, *, backstop: bool = False, **kwargs: Any
) -> ExecResult:
    """Run a job; a sandbox failure is an `InfraError`. With `backstop` (the wall-clock limit is only a
    backstop behind a CPU limit), a time-out because the host starved the job is one too."""
    try:
        result = await sandbox.exec(argv, **kwargs)
    except SandboxError as exc:
        raise InfraError("sandbox", f"{what}: {exc}") from exc
    if backstop and result.status is ExecStatus.TIMEOUT and result.overloaded:
        raise InfraError("host", f"{what}: {result.detail}")
    return _check_exec(result, what)


async def attribute(sandbox: Sandbox, problems: Sequence[str]) -> None:
    """Raise `InfraError` if the grading problems come with a failed health check; else they are the job's."""
    if not problems:
        return
    try:
        unhealthy = await sandbox.check_health()
    except SandboxError as exc:
        unhealthy = str(exc)
    if unhealthy:
        raise InfraError("sandbox", f"{problems[0]}; and the sandbox failed its health check: {unhealthy}")


class Grader:
    """Runs one language's submissions against tests."""

    def __init__(self, language: Language, settings: GraderSettings | None = None) -> None:
        self.language = language
        self.settings = settings or GraderSettings()

    async def write_submission(self, sandbox: Sandbox, code: str, prefix: str = "sub") -> str:
        directory = f"{prefix}-{secrets.token_hex(6)}"
        await _write(sandbox, f"{directory}/{self.language.source_file}", code, self.settings.python)
        return directory

    async def compile(self, sandbox: Sandbox, directory: str) -> tuple[bool, str]:
        """(compiled, compiler output). A compile error is the submission's outcome, not a failure."""
        if not self.language.compiled:
            return True, ""
        seconds = self.language.compile_seconds
        limits = sandbox.profile.limits.with_overrides(
            wall_seconds=seconds * self.settings.wall_factor,
            cpu_seconds=seconds,
            memory_mb=self.language.compile_memory_mb,
        )
        result = await run_checked(
            sandbox,
            fill(self.language.compile_argv, directory),
            "compiling",
            backstop=True,
            timeout=seconds * self.settings.wall_factor,
            limits=limits,
        )
        if result.status is ExecStatus.OK and result.exit_code in (126, 127):
            raise InfraError("sandbox", f"the compiler could not be started: {result.stderr[-500:]}")
        output = (result.stderr + result.stdout)[-4000:]
        if result.status is ExecStatus.TIMEOUT:
            return False, f"compilation timed out after {self.language.compile_seconds:.0f} s\n{output}"
        return result.ok, output

    def _spec(self, task: CodeTask, directory: str, tests: Sequence[Test]) -> dict[str, Any]:
        settings = self.settings
        spec: dict[str, Any] = {
            "style": task.style,
            "submission_dir": directory,
            "module_path": f"{directory}/{self.language.source_file}",
            "run_argv": list(self.language.run_argv),
            "entry_point": task.entry_point,
            "setup_code": task.setup_code,
            "time_limit": task.time_limit,
            "memory_mb": task.memory_mb,
            "wall_factor": settings.wall_factor,
            "wall_seconds": task.time_limit * settings.wall_factor + 1.0,
            "checker": task.checker,
            "float_tolerance": task.float_tolerance,
            "report_chars": settings.report_chars,
            "output_limit": settings.output_limit,
            "tests": [_test_record(t) for t in tests],
        }
        return spec

    def _budget(self, task: CodeTask, tests: Sequence[Test]) -> float:
        per_test = [
            (t.time_limit if isinstance(t, IOTest) and t.time_limit else task.time_limit)
            * self.settings.wall_factor
            + 1.5
            for t in tests
        ]
        return sum(per_test) + 10.0

    async def grade(self, sandbox: Sandbox, task: CodeTask, code: str, tests: Sequence[Test]) -> GradeReport:
        directory = await self.write_submission(sandbox, code)
        compiled, output = await self.compile(sandbox, directory)
        if not compiled:
            outcomes = [TestOutcome(t.name, COMPILE_ERROR, "compilation failed") for t in tests]
            return GradeReport(outcomes, compiled=False, compile_output=output)
        return await self.run_tests(sandbox, task, directory, tests, compile_output=output)

    async def run_tests(
        self,
        sandbox: Sandbox,
        task: CodeTask,
        directory: str,
        tests: Sequence[Test],
        compile_output: str = "",
    ) -> GradeReport:
        grade_dir = f"grade-{secrets.token_hex(8)}"
        python = self.settings.python
        spec = json.dumps(self._spec(task, directory, tests))
        await _write(sandbox, f"{grade_dir}/spec.json", spec, python, [directory])
        await _write(sandbox, f"{grade_dir}/supervisor.py", SUPERVISOR_SOURCE, python, [directory, grade_dir])
        nonce = secrets.token_hex(16)
        budget = self._budget(task, tests)
        memory = max([task.memory_mb] + [t.memory_mb for t in tests if isinstance(t, IOTest)])
        limits = sandbox.profile.limits.with_overrides(
            wall_seconds=budget,
            cpu_seconds=budget,
            memory_mb=memory + 256,
            output_bytes=max(sandbox.profile.limits.output_bytes, 4 << 20),
        )
        argv = [self.settings.python, "-I", f"{grade_dir}/supervisor.py", grade_dir]
        result = await run_checked(
            sandbox, argv, "grading", backstop=True, stdin=nonce + "\n", timeout=budget, limits=limits
        )
        report, problems = parse_results(result, nonce, tests)
        await attribute(sandbox, problems)
        report.compile_output = compile_output
        return report


def _test_record(test: Test) -> dict[str, Any]:
    if isinstance(test, FunctionTest):
        return {"name": test.name, "code": test.code}
    return {
        "name": test.name,
        "input": test.input,
        "output": test.output,
        "time_limit": test.time_limit,
        "memory_mb": test.memory_mb,
    }


def parse_results(result: ExecResult, nonce: str, tests: Sequence[Test]) -> tuple[GradeReport, list[str]]:
    """Read the nonce-tagged lines; tests without a line did not pass.

    Returns the report and the grading's problems (the supervisor did not start, the harness failed on a
    test): those are the submission's failures unless the sandbox then fails its health check
    (`attribute`). A test the supervisor found starved by the host raises `InfraError` here.
    """
    tag = nonce + "\t"
    lines = [line[len(tag) :] for line in result.stdout.splitlines() if line.startswith(tag)]
    problems: list[str] = []
    if not lines or lines[0] != "START":
        why = (
            f"the grading supervisor did not start (status {result.status.value}, exit {result.exit_code}"
            f"{', ' + result.detail if result.detail else ''}): {result.stderr[-800:]}"
        )
        outcomes = [TestOutcome(t.name, NOT_RUN, why) for t in tests]
        return GradeReport(outcomes), [why]
    by_index: dict[int, dict[str, Any]] = {}
    for line in lines[1:]:
        if line == "END":
            continue
        record = json.loads(line)
        if record.get("status") == "overload":
            raise InfraError("host", f"grading test {record.get('index')}: {record.get('message', '')}")
        if record.get("status") == "harness_error":
            why = f"the grading harness failed on a test: {record.get('message', '')}"
            problems.append(why)
            record = {**record, "status": "error", "message": why}
        by_index[int(record["index"])] = record
    if result.status is ExecStatus.TIMEOUT:
        missing = f"the grading run hit its overall time limit before this test ({result.detail})"
    elif result.status is ExecStatus.KILLED:
        missing = f"the grading run was cut short before this test: {result.detail}"
    else:
        missing = "the grading run ended before this test (the submission may have killed the grader)"
    outcomes = []
    for index, test in enumerate(tests):
        record = by_index.get(index)
        if record is None:
            outcomes.append(TestOutcome(test.name, NOT_RUN, missing))
            continue
        outcomes.append(
            TestOutcome(
                name=test.name,
                status=str(record.get("status", "error")),
                message=str(record.get("message", "")),
                expected=str(record.get("expected", "")),
                got=str(record.get("got", "")),
                input=str(record.get("input", "")),
                stderr=str(record.get("stderr", "")),
                seconds=float(record.get("seconds", 0.0)),
            )
        )
    return GradeReport(outcomes), problems
