"""The MCP bridge: a test MCP server over stdio becomes a tool environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from palaestra.env import EnvContext, InfraError
from palaestra.plugins.tools import domain_for
from palaestra.plugins.tools.chat_env import ToolChatEnv
from palaestra.plugins.tools.mcp_bridge import McpDomain
from palaestra.plugins.tools.reference import play, policy_for
from palaestra.types import DEFAULT_AGENT, Action, AgentResult, ComponentStatus, Message, ToolCall

SERVER = Path(__file__).with_name("tools_mcp_server.py")
CONFIG: dict[str, Any] = {
    "command": sys.executable,
    "args": [str(SERVER)],
    "timeout_s": 20,
    "tasks": [
        {
            "id": "count",
            "prompt": ["Add 2 to the counter.", "Now add 3 and tell me the value."],
            "answer": "5",
            "checklist": [
                {
                    "id": "two",
                    "question": "Added 2?",
                    "tool": "increment",
                    "arguments": {"by": 2},
                    "required": True,
                },
                {
                    "id": "three",
                    "question": "Added 3?",
                    "tool": "increment",
                    "arguments": {"by": 3},
                    "turn": 1,
                },
                {"id": "five", "question": "Said 5?", "contains": ["5"], "turn": 1, "depends_on": ["three"]},
            ],
            "reference": [
                {"calls": [{"tool": "increment", "arguments": {"by": 2}}], "reply": "Done, it is 2."},
                {"calls": [{"tool": "increment", "arguments": {"by": 3}}], "reply": "It is now 5."},
            ],
        },
        {
            "id": "word",
            "prompt": "What is 'perro' in English?",
            "answer": "dog",
            "checklist": [{"id": "t", "tool": "translate", "arguments": {"word": "perro"}}],
            "reference": [{"calls": [{"tool": "translate", "arguments": {"word": "perro"}}], "reply": "dog"}],
        },
    ],
}


@pytest.fixture(scope="module")
def domain() -> McpDomain:
    return McpDomain.from_config(CONFIG)


def call(name: str, **arguments: Any) -> Action:
    return Action(message=Message("assistant", tool_calls=[ToolCall(name, json.dumps(arguments))]))


async def step(env: ToolChatEnv, action: Action) -> AgentResult:
    return (await env.step({DEFAULT_AGENT: action})).agents[DEFAULT_AGENT]


async def test_the_servers_tools_become_the_episodes_tools(domain: McpDomain) -> None:
    env = ToolChatEnv(domain, EnvContext("tools/mcp", "e"))
    first = (await env.reset()).agents[DEFAULT_AGENT]
    names = {t["function"]["name"] for t in first.observation.tools}
    assert names == {"increment", "translate", "crash"}
    schema = next(t for t in first.observation.tools if t["function"]["name"] == "increment")
    assert schema["function"]["parameters"]["properties"]["by"]["type"] == "integer"
    await env.close()


@pytest.mark.parametrize("task", ["count", "word"])
async def test_reference_agent_reaches_full_reward_through_mcp(domain: McpDomain, task: str) -> None:
    env = ToolChatEnv(domain, EnvContext("tools/mcp", "e", task=task))
    results = await play(env, policy_for(domain))
    await env.close()
    got: dict[str, float] = {}
    for r in results:
        for c in r.components:
            got[c.name] = got.get(c.name, 0.0) + c.value
    assert got["answer_correct"] == 1.0
    assert got["checklist"] == pytest.approx(len({i.turn for i in domain.select(task, None).checklist}))
    tool_messages = [m for r in results for m in r.observation.messages if m.role == "tool"]
    assert tool_messages[-1].content in ("5", "dog")  # real results from the server process


async def test_each_episode_gets_a_fresh_server(domain: McpDomain) -> None:
    for _ in range(2):
        env = ToolChatEnv(domain, EnvContext("tools/mcp", "e", task="count"))
        await env.reset()
        result = await step(env, call("increment", by=2))
        assert result.observation.messages[0].content == "2"
        await env.close()


async def test_bad_calls_are_checked_before_the_server_and_server_errors_reach_the_agent(
    domain: McpDomain,
) -> None:
    env = ToolChatEnv(domain, EnvContext("tools/mcp", "e", task="word"))
    await env.reset()
    bad = await step(env, call("increment", by="two"))
    assert "invalid arguments" in bad.observation.messages[0].content
    assert [c.name for c in bad.components if c.name == "invalid_tool_call"] == ["invalid_tool_call"]
    assert env.state.connection is None  # refused locally: no server was started for it
    unknown = await step(env, call("translate", word="zzz"))
    assert "error" in json.loads(unknown.observation.messages[0].content)  # the server's own error
    assert not any(c.name == "invalid_tool_call" for c in unknown.components)
    end = await step(env, Action(text="I do not know."))
    assert {c.name: c.value for c in end.components}["answer_correct"] == 0.0
    await env.close()


async def test_a_server_that_dies_is_an_infrastructure_failure() -> None:
    domain = McpDomain.from_config({**CONFIG, "timeout_s": 5})
    env = ToolChatEnv(domain, EnvContext("tools/mcp", "e", task="word"))
    await env.reset()
    with pytest.raises(InfraError):
        await step(env, call("crash"))
    await env.close()


async def test_a_server_that_cannot_start_is_an_infrastructure_failure() -> None:
    broken = McpDomain.from_config({"command": sys.executable, "args": ["-c", "import sys; sys.exit(1)"]})
    env = ToolChatEnv(broken, EnvContext("tools/mcp", "e"))
    with pytest.raises(InfraError):
        await env.reset()


async def test_the_demo_environment_runs_its_bundled_server() -> None:
    demo = domain_for("tools/mcp-demo", {})
    env = ToolChatEnv(demo, EnvContext("tools/mcp-demo", "e", task="salt"))
    results = await play(env, policy_for(demo))
    await env.close()
    assert {c.name: c.value for c in results[-1].components}["answer_correct"] == 1.0
    assert all(i.passed for r in results for i in r.checklist)


async def test_a_task_without_an_answer_gets_a_not_run_outcome() -> None:
    plain = McpDomain.from_config({"command": sys.executable, "args": [str(SERVER)], "prompt": "Hello?"})
    env = ToolChatEnv(plain, EnvContext("tools/mcp", "e"))
    await env.reset()
    end = await step(env, Action(text="Hi."))
    [outcome] = [c for c in end.components if c.name == "answer_correct"]
    assert outcome.status is ComponentStatus.NOT_RUN
