"""The stateful tool domains (shop, travel): reference agents, penalties, policy, early stops, modes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from palaestra.env import EnvContext, InvalidAction
from palaestra.plugins.tools import domain_for
from palaestra.plugins.tools.chat_env import ToolChatEnv
from palaestra.plugins.tools.reference import play, policy_for
from palaestra.types import (
    DEFAULT_AGENT,
    Action,
    AgentResult,
    ComponentStatus,
    Message,
    RewardKind,
    ToolCall,
)

DOMAINS = ["tools/shop", "tools/travel"]


def make_env(env_id: str, task: int | str = 0, **config: Any) -> ToolChatEnv:
    return ToolChatEnv(domain_for(env_id, {}), EnvContext(env_id, "test", config=config, task=task))


def totals(results: Sequence[AgentResult]) -> dict[str, float]:
    out: dict[str, float] = {}
    for result in results:
        for c in result.components:
            if c.status is ComponentStatus.OK:
                out[c.name] = out.get(c.name, 0.0) + c.value
    return out


def call(name: str, **arguments: Any) -> Action:
    return Action(message=Message("assistant", tool_calls=[ToolCall(name, json.dumps(arguments))]))


async def step(env: ToolChatEnv, action: Action) -> AgentResult:
    return (await env.step({DEFAULT_AGENT: action})).agents[DEFAULT_AGENT]


@pytest.mark.parametrize("env_id", DOMAINS)
async def test_reference_agent_reaches_full_reward_on_every_task(env_id: str) -> None:
    domain = domain_for(env_id, {})
    assert len(domain.tasks()) >= 20
    policy = policy_for(domain)
    for index, task in enumerate(domain.tasks()):
        env = make_env(env_id, index)
        results = await play(env, policy)
        got = totals(results)
        assert got["state_match"] == 1.0, task.id
        assert got["facts_conveyed"] == 1.0, task.id
        turns = len({i.turn for i in task.checklist})
        assert got["checklist"] == pytest.approx(turns), task.id  # every item of every turn
        assert sum(r.scalar_reward for r in results) == pytest.approx(3.0), task.id
        assert not any(c.kind is RewardKind.PENALTY for r in results for c in r.components)
        assert results[-1].terminated and results[-1].info["stop_reason"] == "the user is done"
        decided = [item for r in results for item in r.checklist]
        assert sorted(i.item_id for i in decided) == sorted(i.id for i in task.checklist)
        assert all(i.passed and i.evidence for i in decided)


@pytest.mark.parametrize("env_id", DOMAINS)
async def test_same_seed_same_first_observation_and_tools(env_id: str) -> None:
    a = (await ToolChatEnv(domain_for(env_id, {}), EnvContext(env_id, "a")).reset(seed=5)).agents[
        DEFAULT_AGENT
    ]
    b = (await ToolChatEnv(domain_for(env_id, {}), EnvContext(env_id, "b")).reset(seed=5)).agents[
        DEFAULT_AGENT
    ]
    assert a.observation.messages == b.observation.messages
    assert a.observation.tools and a.observation.tools == b.observation.tools
    assert a.observation.tools[0]["type"] == "function"
    assert a.observation.messages[0].role == "system" and "Policy" in a.observation.messages[0].content


async def test_unknown_tool_and_bad_arguments_are_tool_errors_with_penalties() -> None:
    env = make_env("tools/shop")
    await env.reset()
    hallucinated = await step(env, call("delete_everything"))
    [message] = hallucinated.observation.messages
    assert message.role == "tool" and message.tool_call_id and "unknown tool" in message.content
    [penalty] = [c for c in hallucinated.components if c.kind is RewardKind.PENALTY]
    assert (penalty.name, penalty.value, penalty.weight) == ("invalid_tool_call", -1.0, 0.1)
    assert hallucinated.scalar_reward < 0

    wrong_type = await step(env, call("find_customer", email=42))
    assert "invalid arguments" in wrong_type.observation.messages[0].content
    bad_json = Action(message=Message("assistant", tool_calls=[ToolCall("get_order", "{not json")]))
    both = await step(
        env,
        Action(
            message=Message(
                "assistant",
                tool_calls=[
                    *bad_json.message.tool_calls,  # type: ignore[union-attr]
                    ToolCall("get_order", json.dumps({"order_id": "O1001", "extra": 1})),
                ],
            )
        ),
    )
    assert [c.value for c in both.components if c.name == "invalid_tool_call"] == [-2.0]
    assert not both.done  # the agent can react


async def test_tool_errors_that_are_not_the_agents_fault_cost_nothing() -> None:
    env = make_env("tools/shop")
    await env.reset()
    result = await step(env, call("find_customer", email="nobody@example.com"))
    assert "no customer" in result.observation.messages[0].content
    assert not any(c.kind is RewardKind.PENALTY for c in result.components)


async def test_policy_violations_are_refused_and_penalised() -> None:
    domain = domain_for("tools/shop", {})
    task = next(t for t in domain.tasks() if t.id == "shop-refuse-0")
    order_id = task.data["order_id"]
    email = task.reference[0].calls[0].arguments["email"]
    env = make_env("tools/shop", task.id)
    await env.reset()
    before_identity = await step(env, call("get_order", order_id=order_id))
    assert "find_customer first" in before_identity.observation.messages[0].content
    assert [c.name for c in before_identity.components if c.kind is RewardKind.PENALTY] == [
        "policy_violation"
    ]
    await step(env, call("find_customer", email=email))
    cancel = await step(env, call("cancel_order", order_id=order_id, reason="ordered by mistake"))
    assert "only pending orders" in cancel.observation.messages[0].content
    [penalty] = [c for c in cancel.components if c.kind is RewardKind.PENALTY]
    assert (penalty.name, penalty.value, penalty.weight) == ("policy_violation", -1.0, 0.25)
    other = "O1001" if order_id != "O1001" else "O1004"
    foreign = await step(env, call("get_order", order_id=other))
    assert "does not belong" in foreign.observation.messages[0].content
    end = await step(env, Action(text="It was delivered, so it cannot be cancelled."))
    outcome = {c.name: c.value for c in end.components if c.kind is RewardKind.OUTCOME}
    assert outcome == {"state_match": 1.0, "facts_conveyed": 1.0}  # the refusal left the database alone


async def test_travel_policy_refuses_basic_fare_cancellation() -> None:
    domain = domain_for("tools/travel", {})
    task = next(t for t in domain.tasks() if t.id.startswith("travel-refuse"))
    env = make_env("tools/travel", task.id)
    await env.reset()
    await step(env, call("find_user", email=task.reference[0].calls[0].arguments["email"]))
    booking_id = task.reference[0].calls[1].arguments["booking_id"]
    refused = await step(env, call("cancel_booking", booking_id=booking_id))
    assert "basic fare" in refused.observation.messages[0].content
    assert any(c.name == "policy_violation" for c in refused.components)


async def test_early_stop_ends_the_episode_on_the_required_item() -> None:
    env = make_env("tools/shop", "shop-cancel-0")
    await env.reset()
    end = await step(env, Action(text="I do not know."))
    assert end.terminated and "identify" in end.info["stop_reason"]
    got = {c.name: c.value for c in end.components}
    assert got["state_match"] == 0.0 and got["facts_conveyed"] == 0.0 and got["checklist"] == 0.0
    identify = next(i for i in end.checklist if i.item_id == "identify")
    assert not identify.passed and identify.status is ComponentStatus.OK


async def test_early_stop_can_be_allowed_then_the_user_goes_on() -> None:
    env = make_env("tools/shop", "shop-status-0", stop_on_required=False)
    await env.reset()
    first = await step(env, Action(text="I do not know."))
    assert not first.done and first.observation.messages[0].role == "user"
    last = await step(env, Action(text="I do not know."))
    assert last.terminated and last.info["stop_reason"] == "the user is done"


async def test_wrong_write_fails_the_state_match() -> None:
    domain = domain_for("tools/shop", {})
    task = next(t for t in domain.tasks() if t.id == "shop-cancel-0")
    env = make_env("tools/shop", task.id)
    await env.reset()
    for planned in task.reference[0].calls[:2]:
        await step(env, call(planned.tool, **planned.arguments))
    await step(
        env, call("update_address", order_id=task.data["order_id"], street="1 Wrong Way", city="X", zip="0")
    )
    end = await step(env, Action(text="Done, refund is on its way."))
    got = {c.name: c.value for c in end.components}
    assert got["state_match"] == 0.0
    assert end.terminated  # the required cancel_order item failed


async def test_sparse_mode_pays_the_same_at_the_end_of_each_turn() -> None:
    domain = domain_for("tools/shop", {})
    policy = policy_for(domain)
    dense = await play(make_env("tools/shop", "shop-two-step-0"), policy)
    sparse = await play(make_env("tools/shop", "shop-two-step-0", checklist_mode="sparse"), policy)
    per_step = [sum(c.value for c in r.components if c.name == "checklist") for r in sparse[1:]]
    turn_ends = [
        i
        for i, r in enumerate(sparse[1:])
        if r.observation.messages and r.observation.messages[-1].role == "user"
    ]
    assert [i for i, v in enumerate(per_step) if v > 0] == turn_ends
    assert totals(dense)["checklist"] == pytest.approx(totals(sparse)["checklist"]) == pytest.approx(2.0)
    assert sum(1 for r in dense[1:] if any(c.name == "checklist" and c.value > 0 for c in r.components)) > 2


async def test_the_step_limit_truncates() -> None:
    env = make_env("tools/travel")
    await env.reset()
    result = None
    for _ in range(env.domain.max_episode_steps):
        result = await step(env, call("search_flights", origin="LUN", destination="KEV", date="2026-06-01"))
    assert result is not None and result.truncated and not result.terminated
    assert {c.name for c in result.components} >= {"state_match", "facts_conveyed"}
    assert any(i.status is ComponentStatus.NOT_RUN for i in result.checklist) or result.checklist
    with pytest.raises(InvalidAction):
        await step(env, Action(text="more"))


async def test_actions_that_are_not_assistant_messages_are_refused() -> None:
    env = make_env("tools/shop")
    await env.reset()
    with pytest.raises(InvalidAction):
        await step(env, Action(discrete=1))
    with pytest.raises(InvalidAction):
        await step(env, Action(message=Message("user", "hi")))


def test_expected_states_differ_from_the_start_for_write_tasks() -> None:
    for env_id in DOMAINS:
        domain: Any = domain_for(env_id, {})
        for task in domain.tasks():
            initial = json.dumps(domain.snapshot(domain.new_state(task)), sort_keys=True, default=str)
            writes = any(
                c.tool
                in (
                    "cancel_order",
                    "return_items",
                    "update_address",
                    "book_flight",
                    "cancel_booking",
                    "add_bags",
                    "change_flight",
                )
                for plan in task.reference
                for c in plan.calls
            )
            assert (domain.expected_snapshot(task) != initial) == writes, task.id
