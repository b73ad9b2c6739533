"""The built-in problem set: well formed; every reference solution gets full marks from the real grader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from palaestra.plugins.code.grader import Grader
from palaestra.plugins.code.languages import get_language
from palaestra.plugins.code.tasks import CodeTask, builtin_tasks, task_from_record
from palaestra.sandbox.manager import SandboxManager

TASKS = builtin_tasks()


@pytest.fixture
async def manager() -> AsyncIterator[SandboxManager]:
    async with SandboxManager.for_tests(backend="local") as m:
        yield m


def test_builtin_set_shape() -> None:
    assert len(TASKS) >= 30
    assert len({t.id for t in TASKS}) == len(TASKS)
    styles = {t.style for t in TASKS}
    assert styles == {"function", "stdio"}
    assert {t.difficulty for t in TASKS} == {"easy", "medium", "hard"}
    assert sum("cpp" in t.languages for t in TASKS) >= 8
    for task in TASKS:
        assert task.public_tests and task.hidden_tests, task.id
        assert set(task.reference) == set(task.languages), task.id
        assert task_from_record(task.to_record()) == task  # the record round-trips


async def _grade_reference(manager: SandboxManager, task: CodeTask, language: str) -> tuple[str, list[str]]:
    lang = get_language(language)
    async with await manager.lease(lang.profile, f"ref-{task.id}-{language}") as sandbox:
        report = await Grader(lang).grade(
            sandbox, task, task.reference[language], task.public_tests + task.hidden_tests
        )
    failures = [f"{o.name}: {o.status} {o.message[:200]}" for o in report.outcomes if not o.passed]
    if not report.compiled:
        failures.append(report.compile_output[-500:])
    return f"{task.id}/{language}", failures


@pytest.mark.parametrize("language", ["python", "cpp"])
async def test_every_reference_solution_passes(manager: SandboxManager, language: str) -> None:
    tasks = [t for t in TASKS if t.supports(language)]
    limit = asyncio.Semaphore(2)

    async def one(task: CodeTask) -> tuple[str, list[str]]:
        async with limit:
            return await _grade_reference(manager, task, language)

    results = await asyncio.gather(*(one(t) for t in tasks))
    failed = {name: failures for name, failures in results if failures}
    assert not failed, failed
    assert len(results) == len(tasks)
