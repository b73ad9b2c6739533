"""Tool episodes through the real server over gRPC: tools, tool calls, checklist items and penalties."""

from __future__ import annotations

import json

import pytest

from palaestra.agents.client import Client
from palaestra.plugins.tools.reference import make_scripted_policy
from palaestra.types import Action, ComponentStatus, Message, RewardKind, ToolCall


def test_a_reference_shop_episode_over_grpc(client: Client) -> None:
    policy = make_scripted_policy("tools/shop")
    [step] = client.open("tools/shop", task="shop-two-step-0")
    first = step.result.observation
    assert first.tools and {t["function"]["name"] for t in first.tools} >= {"find_customer", "cancel_order"}
    assert first.info["task_id"] == "shop-two-step-0"
    rewards, items = 0.0, []
    while not step.done:
        step = client.step(step.episode_id, policy(step))
        rewards += step.result.scalar_reward
        items += step.result.checklist
        for message in step.result.observation.messages:
            if message.role == "tool":
                assert message.tool_call_id.startswith("ref_")
    assert rewards == pytest.approx(3.0)
    assert items and all(i.passed and i.status is ComponentStatus.OK for i in items)
    assert all(i.evidence and i.evidence[0].snippet is not None for i in items)
    [summary] = client.close(step.episode_id)
    assert summary.terminated and summary.infra_failure is None


def test_a_hallucinated_tool_over_grpc_is_a_tool_message_and_a_penalty(client: Client) -> None:
    [step] = client.open("tools/travel", seed=3)
    bad = Message("assistant", tool_calls=[ToolCall("teleport", json.dumps({"to": "moon"}), id="c1")])
    step = client.step(step.episode_id, Action(message=bad))
    [tool_message] = step.result.observation.messages
    assert tool_message.role == "tool" and tool_message.tool_call_id == "c1"
    assert "unknown tool" in tool_message.content
    [penalty] = [c for c in step.result.components if c.kind is RewardKind.PENALTY]
    assert penalty.name == "invalid_tool_call" and step.result.scalar_reward < 0 and not step.done
    step = client.step(step.episode_id, "I do not know.")
    assert step.done
    client.close(step.episode_id)
