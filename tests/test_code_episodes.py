"""Repair and tool episodes, gated process rewards, and infrastructure failures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from code_helpers import (
    ADD_OK,
    SUM_OK_CPP,
    components,
    local_manager,
    make_env,
    play,
    plugin_config,
    write_task_file,
)

from palaestra.env import InfraError
from palaestra.sandbox.api import ExecResult, ExecStatus, Limits, Profile, Sandbox, SandboxError
from palaestra.sandbox.manager import SandboxManager
from palaestra.types import Message, RewardKind, ToolCall

HALF_RIGHT = (
    "```python\ndef add(a, b):\n    return a + b if a > 0 else 0\n```"  # small passes, negative fails
)


@pytest.fixture
async def manager() -> AsyncIterator[SandboxManager]:
    m = await local_manager()
    yield m
    await m.shutdown()


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return plugin_config(write_task_file(tmp_path))


def process_values(results: Sequence[Any]) -> list[float]:
    return [c.value for r in results for c in r.components if c.name == "process.public_delta"]


async def test_repair_wrong_then_fixed_earns_process_credit(manager: SandboxManager, config: dict) -> None:
    env = make_env("code/python-repair", manager, config, task="add")
    _, first, second = await play(env, HALF_RIGHT, ADD_OK)
    assert not first.done
    feedback = first.observation.messages[0].content
    assert "Public tests: 1/2 passed." in feedback
    assert "FAILED negative" in feedback and "expected: -2" in feedback and "got:      0" in feedback
    assert "2 submissions left" in feedback
    assert "zero" not in feedback and "odd" not in feedback  # hidden test names never appear
    assert process_values([first, second]) == [pytest.approx(0.5), pytest.approx(0.5)]
    assert second.terminated  # every public test passes: graded on the hidden tests now
    got = components(second)
    assert got["outcome.all_hidden_pass"] == 1.0
    process = [c for c in first.components + second.components if c.kind is RewardKind.PROCESS]
    assert all(c.weight == pytest.approx(0.2) for c in process)
    assert second.info["process_deltas"] == [0.5, 0.5]


async def test_repair_runs_out_of_submissions(manager: SandboxManager, config: dict) -> None:
    env = make_env("code/python-repair", manager, config, task="add", options={"max_submissions": 2})
    results = await play(env, HALF_RIGHT, "no code this time")
    assert len(results) == 3 and results[-1].terminated
    final = results[-1]
    got = components(final)
    assert got["format.code_block"] == -1.0
    # The latest program that was submitted (HALF_RIGHT) is what gets graded.
    # add('1', 2) compares '1' > 0 and raises TypeError instead of ValueError; the other three pass.
    assert final.info["hidden_statuses"] == ["pass", "pass", "error", "pass"]
    assert got["outcome.hidden_fraction"] == pytest.approx(3 / 4)


async def test_gated_process_reward(manager: SandboxManager, config: dict) -> None:
    options = {"rewards": {"gated": True, "gate_threshold": 1.0}}
    env = make_env("code/python-repair", manager, config, task="add", options=options)
    _, first, second = await play(env, HALF_RIGHT, ADD_OK)
    per_turn = [c for c in first.components + second.components if c.name == "process.public_delta"]
    assert all(c.weight == 0.0 for c in per_turn)  # reported, not paid per turn
    gated = next(c for c in second.components if c.name == "process.gated")
    assert gated.value == pytest.approx(1.0) and "gate open" in gated.detail
    # A failing outcome keeps the gate shut.
    env = make_env(
        "code/python-repair", manager, config, task="add", options={**options, "max_submissions": 1}
    )
    *_, final = await play(env, HALF_RIGHT)
    gated = next(c for c in final.components if c.name == "process.gated")
    assert gated.value == 0.0 and "gate closed" in gated.detail


async def test_cpp_repair_after_compile_error(manager: SandboxManager, config: dict) -> None:
    env = make_env("code/cpp-repair", manager, config, task="pair-sum")
    _, first, second = await play(env, "```cpp\nint main( {\n```", SUM_OK_CPP)
    assert "Compilation failed" in first.observation.messages[0].content
    assert components(second)["outcome.all_hidden_pass"] == 1.0
    assert process_values([first, second]) == [0.0, 1.0]


async def test_tool_mode_runs_code_then_grades_submission(manager: SandboxManager, config: dict) -> None:
    env = make_env("code/python-tools", manager, config, task="add")
    reset = (await env.reset(seed=0)).agents["agent"]
    assert [t["function"]["name"] for t in reset.observation.tools] == ["run_code"]
    call = ToolCall("run_code", json.dumps({"code": "print(int(input()) * 2)", "stdin": "21"}), id="c1")
    step = await env.step({"agent": _message_action(Message("assistant", "", tool_calls=[call]))})
    [tool_reply] = step.agents["agent"].observation.messages
    assert tool_reply.role == "tool" and tool_reply.tool_call_id == "c1"
    assert "exit code: 0" in tool_reply.content and "42" in tool_reply.content
    bad = ToolCall("run_code", "not json", id="c2")
    step = await env.step({"agent": _message_action(Message("assistant", "", tool_calls=[bad]))})
    assert "arguments must be JSON" in step.agents["agent"].observation.messages[0].content
    step = await env.step({"agent": _message_action(Message("assistant", ADD_OK))})
    final = step.agents["agent"]
    assert final.terminated and components(final)["outcome.all_hidden_pass"] == 1.0
    await env.close()


def _message_action(message: Message) -> Any:
    from palaestra.types import Action

    return Action(message=message)


async def test_tools_refused_outside_tool_mode(manager: SandboxManager, config: dict) -> None:
    from palaestra.env import InvalidAction
    from palaestra.types import Action

    env = make_env("code/python", manager, config, task="add")
    await env.reset(seed=0)
    call = ToolCall("run_code", "{}", id="x")
    with pytest.raises(InvalidAction):
        await env.step({"agent": Action(message=Message("assistant", "", tool_calls=[call]))})
    await env.close()


# ---------------------------------------------------------------- infrastructure failures


class BrokenManager:
    """A manager whose sandboxes fail the way a dead daemon would."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def lease(self, profile: str, episode_id: str, **limits: Any) -> Sandbox:
        if self.mode == "lease":
            raise SandboxError("docker daemon is gone")
        return BrokenSandbox(self.mode)


class BrokenSandbox(Sandbox):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.profile = Profile("python", "none", Limits())

    async def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        if self.mode == "write":
            raise SandboxError("disk full")

    async def read_file(self, path: str) -> bytes:
        raise SandboxError("gone")

    async def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str = b"",
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        limits: Limits | None = None,
    ) -> ExecResult:
        return ExecResult(ExecStatus.SANDBOX_ERROR, None, "", "", 0.0, detail="container vanished")

    async def release(self) -> None:
        pass


@pytest.mark.parametrize("mode", ["lease", "write", "exec"])
async def test_sandbox_failure_is_an_infra_error_not_a_zero(config: dict, mode: str) -> None:
    env = make_env("code/python", BrokenManager(mode), config, task="add")
    await env.reset(seed=0)
    from palaestra.types import Action

    with pytest.raises(InfraError) as caught:
        await env.step({"agent": Action(text=ADD_OK)})
    assert caught.value.source == "sandbox"
    await env.close()


async def test_no_sandbox_manager_is_an_infra_error(config: dict) -> None:
    from palaestra.types import Action

    env = make_env("code/python", None, config, task="add")
    await env.reset(seed=0)
    with pytest.raises(InfraError):
        await env.step({"agent": Action(text=ADD_OK)})
