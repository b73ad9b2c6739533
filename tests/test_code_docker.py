"""A few code episodes through the Docker backend (skipped without an engine, required under CI=true)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from code_helpers import ADD_OK, SUM_OK_CPP, components, make_env, play, plugin_config, write_task_file
from test_code_integrity import HACKS

from palaestra.sandbox.manager import SandboxManager
from palaestra.sandbox.testing import docker_or_skip

pytestmark = pytest.mark.docker


@pytest.fixture
async def manager() -> AsyncIterator[SandboxManager]:
    docker_or_skip()
    async with SandboxManager.for_tests(backend="docker") as m:
        yield m


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return plugin_config(write_task_file(tmp_path))


async def test_python_and_cpp_through_docker(manager: SandboxManager, config: dict) -> None:
    *_, final = await play(make_env("code/python", manager, config, task="add"), ADD_OK)
    assert components(final)["outcome.all_hidden_pass"] == 1.0
    *_, final = await play(make_env("code/cpp", manager, config, task="pair-sum"), SUM_OK_CPP)
    assert components(final)["outcome.all_hidden_pass"] == 1.0


async def test_repair_through_docker(manager: SandboxManager, config: dict) -> None:
    wrong = "```python\ndef add(a, b):\n    return a + b if a > 0 else 0\n```"
    _, first, second = await play(make_env("code/python-repair", manager, config, task="add"), wrong, ADD_OK)
    assert "Public tests: 1/2 passed." in first.observation.messages[0].content
    assert components(second)["outcome.all_hidden_pass"] == 1.0


DOCKER_HACKS = ["read_hidden_tests", "kill_the_grader", "fake_pass_markers", "read_grader_memory"]


@pytest.mark.parametrize("hack", DOCKER_HACKS)
async def test_hacks_fail_through_docker(manager: SandboxManager, config: dict, hack: str) -> None:
    reply = f"```python\n{HACKS[hack]}\n```"
    # Never an InfraError: a submission must not turn its own 0 into a dropped sample.
    *_, final = await play(make_env("code/python", manager, config, task="add"), reply)
    assert components(final)["outcome.hidden_fraction"] == 0.0, final.info
