"""The text the agent reads: instructions, the problem, repair feedback, tool output, the final summary.

Feedback only ever describes PUBLIC tests; hidden tests are reported as counts once the episode is over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from palaestra.plugins.code.grader import GradeReport, TestOutcome
from palaestra.plugins.code.languages import Language
from palaestra.plugins.code.tasks import CodeTask, FunctionTest, IOTest
from palaestra.sandbox.api import ExecResult, ExecStatus

if TYPE_CHECKING:
    from palaestra.plugins.code.env import EpisodeSettings


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 40] + f"\n... [{len(text) - limit + 40} characters cut]"


def system_prompt(language: Language, settings: EpisodeSettings, task: CodeTask) -> str:
    tag = language.fence_tags[0]
    lines = [
        f"You are solving a programming task in {language.name}.",
        f"Reply with your complete program in a fenced code block (```{tag} ... ```); "
        + (
            "the last such block is graded."
            if settings.extract == "last"
            else "the first such block is graded."
        ),
    ]
    if task.style == "function":
        lines.append(f"Define the function `{task.entry_point}`; tests import your module and call it.")
    else:
        lines.append("Read the input from standard input and write the answer to standard output.")
    if settings.repair:
        lines.append(
            f"You may submit up to {settings.max_submissions} times; after each submission you see "
            "the results of the public tests. Hidden tests decide the final result."
        )
    else:
        lines.append("You submit once; hidden tests decide the result.")
    if settings.tools:
        lines.append(
            f"You may call the `run_code` tool (up to {settings.max_tool_calls} times) to try programs "
            "before submitting; tool runs are not graded."
        )
    return "\n".join(lines)


def _show_test(test: FunctionTest | IOTest) -> str:
    if isinstance(test, FunctionTest):
        return f"# {test.name}\n{test.code.strip()}"
    return f"Input:\n{test.input.rstrip()}\nExpected output:\n{test.output.rstrip()}"


def problem_statement(task: CodeTask, language: Language) -> str:
    parts = [f"# {task.title or task.id}", task.prompt.strip()]
    if task.style == "stdio":
        parts.append(f"Time limit: {task.time_limit:g} s per test. Memory limit: {task.memory_mb} MB.")
    if task.public_tests:
        tag = "python" if task.style == "function" else "text"
        examples = "\n\n".join(_show_test(t) for t in task.public_tests)
        parts.append(f"Public tests:\n```{tag}\n{examples}\n```")
    starter = task.starter.get(language.name)
    if starter:
        parts.append(f"Starter code:\n```{language.fence_tags[0]}\n{starter.rstrip()}\n```")
    return "\n\n".join(parts)


def describe_failure(outcome: TestOutcome) -> str:
    lines = [f"FAILED {outcome.name} ({outcome.status.replace('_', ' ')})"]
    if outcome.message:
        lines.append(outcome.message)
    if outcome.input:
        lines.append(f"input:\n{outcome.input.rstrip()}")
    if outcome.expected or outcome.got:
        lines.append(f"expected:\n{outcome.expected.rstrip()}\ngot:\n{outcome.got.rstrip()}")
    if outcome.stderr.strip():
        lines.append(f"stderr:\n{outcome.stderr.strip()[-400:]}")
    return "\n".join(lines)


def public_feedback(report: GradeReport, limit: int) -> str:
    if not report.compiled:
        return clip(f"Compilation failed:\n{report.compile_output.strip()}", limit)
    head = f"Public tests: {report.passed}/{report.total} passed."
    failures = [describe_failure(o) for o in report.outcomes if not o.passed]
    return clip("\n\n".join([head, *failures]), limit)


def repair_prompt(note: str, left: int, language: Language) -> str:
    plural = "submission" if left == 1 else "submissions"
    return (
        f"{note}\n\nYou have {left} {plural} left. Reply with the complete corrected program in a "
        f"```{language.fence_tags[0]} block."
    )


def final_summary(lead: str, public: GradeReport | None, hidden: GradeReport | None) -> str:
    parts = [lead] if lead else []
    if hidden is None:
        parts.append("No program was submitted; nothing was graded.")
    elif not hidden.compiled:
        parts.append(f"The final program did not compile:\n{clip(hidden.compile_output.strip(), 1500)}")
    else:
        assert public is not None
        parts.append(
            f"Final grading: public tests {public.passed}/{public.total}, "
            f"hidden tests {hidden.passed}/{hidden.total}."
        )
    return "\n\n".join(parts)


def final_info(public: GradeReport | None, hidden: GradeReport | None, deltas: list[float]) -> dict[str, Any]:
    info: dict[str, Any] = {"process_deltas": [round(d, 6) for d in deltas]}
    for name, report in (("public", public), ("hidden", hidden)):
        if report is not None:
            info[f"{name}_passed"] = report.passed
            info[f"{name}_total"] = report.total
            info[f"{name}_statuses"] = [o.status for o in report.outcomes]
            info["compiled"] = report.compiled
    return info


def tool_output(result: ExecResult, limit: int) -> str:
    status = "" if result.status is ExecStatus.OK else f" ({result.status.value})"
    half = max(200, limit // 2)
    stdout = clip(result.stdout, half) + (" [truncated]" if result.stdout_truncated else "")
    stderr = clip(result.stderr, half) + (" [truncated]" if result.stderr_truncated else "")
    return f"exit code: {result.exit_code}{status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
