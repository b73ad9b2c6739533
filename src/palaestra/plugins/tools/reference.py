"""Scripted reference agents: they follow each task's reference plan, one tool call per step.

`scripted_policy(env_id)` returns `policy(history) -> Action`, where `history` is the list of
observations the agent received so far in the episode (the first one from reset, then one per step).
The policy reads the task id from the first observation's info, counts the user messages seen (the
turn) and the observations since the last user message (the position in that turn's plan), and sends
the next planned tool call or, when the turn's calls are done, the planned reply. It keeps no state of
its own, so one policy object can drive any number of episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from palaestra.env import AsyncEnv
from palaestra.plugins.tools.tasks import Domain, Task
from palaestra.types import DEFAULT_AGENT, Action, AgentResult, EpisodeStep, Message, Observation, ToolCall

Policy = Callable[[Sequence[Observation]], Action]


def plan_position(history: Sequence[Observation]) -> tuple[int, int]:
    """(turn, steps taken in this turn) from the observations so far."""
    turn = -1
    since_user = 0
    for observation in history:
        if any(m.role == "user" for m in observation.messages):
            turn += 1
            since_user = 0
        else:
            since_user += 1
    return max(turn, 0), since_user


def next_action(task: Task, history: Sequence[Observation]) -> Action:
    turn, position = plan_position(history)
    if turn >= len(task.reference):
        return Action(text="Is there anything else I can help with?")
    plan = task.reference[turn]
    if position < len(plan.calls):
        call = plan.calls[position]
        tool_call = ToolCall(call.tool, call.arguments_json(), id=f"ref_{turn}_{position}")
        return Action(message=Message("assistant", "", tool_calls=[tool_call]))
    return Action(text=plan.reply)


def policy_for(domain: Domain) -> Policy:
    by_id = {t.id: t for t in domain.tasks()}

    def policy(history: Sequence[Observation]) -> Action:
        if not history:
            raise ValueError("the policy needs at least the first observation")
        task_id = history[0].info.get("task_id")
        if task_id not in by_id:
            raise KeyError(f"task {task_id!r} is not a task of {domain.name}")
        return next_action(by_id[task_id], history)

    return policy


def scripted_policy(env_id: str, config: Mapping[str, Any] | None = None) -> Policy:
    """The reference agent for a `tools/...` environment (config: the plugin's config table)."""
    from palaestra.plugins.tools import domain_for

    return policy_for(domain_for(env_id, config or {}))


def make_scripted_policy(env_id: str, seed: int | None = None) -> Callable[[EpisodeStep], dict[str, Action]]:
    """The per-episode form `palaestra run` uses: called with each `EpisodeStep`, keeps the history itself.

    The MCP environment configured from the server's config (`tools/mcp`) has no scripted agent here:
    its tasks live in a config this process may not have.
    """
    policy = scripted_policy(env_id)
    history: list[Observation] = []

    def act(step: EpisodeStep) -> dict[str, Action]:
        history.append(step.result.observation)
        return {DEFAULT_AGENT: policy(history)}

    return act


async def play(
    env: AsyncEnv, policy: Policy, seed: int | None = None, options: Mapping[str, Any] | None = None
) -> list[AgentResult]:
    """Runs one in-process episode with `policy`; returns the agent's result after reset and each step."""
    first = (await env.reset(seed=seed, options=options)).agents[DEFAULT_AGENT]
    results = [first]
    history = [first.observation]
    while not results[-1].done:
        result = (await env.step({DEFAULT_AGENT: policy(history)})).agents[DEFAULT_AGENT]
        results.append(result)
        history.append(result.observation)
    return results
