"""A plugin loaded only by the tests (through `plugin_modules`): environments that misbehave on purpose."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from palaestra import (
    Action,
    AgentResult,
    AsyncEnv,
    DiscreteSpace,
    Env,
    EnvContext,
    EnvKind,
    EnvSpec,
    InfraError,
    Observation,
    StepResult,
    TextSpace,
    hookimpl,
)
from palaestra.registry import EnvRegistry
from palaestra.types import EpisodeSummary

FINISHED: list[EpisodeSummary] = []


def _spec(env_id: str, **kwargs: Any) -> EnvSpec:
    return EnvSpec(
        id=env_id,
        description="test-only environment",
        observation_space=TextSpace(),
        action_space=TextSpace(max_length=20),
        max_episode_steps=10,
        **kwargs,
    )


class Crashing(Env):
    """Steps raise a plain exception when the action says 'crash'."""

    runs_inline = True

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        return StepResult.single(AgentResult())

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        if next(iter(actions.values())).text == "crash":
            raise ZeroDivisionError("the environment divided by zero")
        return StepResult.single(AgentResult(reward=1.0))


class BrokenVerifier(AsyncEnv):
    async def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        return StepResult.single(AgentResult())

    async def step(self, actions: Mapping[str, Action]) -> StepResult:
        raise InfraError("verifier", "the verifier timed out")


class SlowSync(Env):
    """A blocking environment: must run in a worker thread, never on the event loop."""

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        return StepResult.single(AgentResult())

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        time.sleep(float(next(iter(actions.values())).text or "0.3"))
        return StepResult.single(AgentResult(reward=1.0, terminated=True))


class SlowAsync(AsyncEnv):
    async def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        return StepResult.single(AgentResult())

    async def step(self, actions: Mapping[str, Action]) -> StepResult:
        await asyncio.sleep(float(next(iter(actions.values())).text or "0.3"))
        return StepResult.single(AgentResult(reward=1.0, terminated=True))


class Alternating(Env):
    """Two players take turns; each move scores 1 for the mover; four moves end it."""

    runs_inline = True

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        self.moves = 0
        return StepResult(
            {"north": AgentResult(observation=Observation(legal_actions=["0", "1"]))}, next_agent="north"
        )

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        [(mover, _)] = actions.items()
        self.moves += 1
        other = "south" if mover == "north" else "north"
        done = self.moves >= 4
        return StepResult(
            {mover: AgentResult(reward=1.0, terminated=done), other: AgentResult(terminated=done)},
            next_agent="" if done else other,
        )


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    registry.add(_spec("test/crash"), lambda ctx: Crashing())
    registry.add(_spec("test/broken-verifier"), lambda ctx: BrokenVerifier())
    registry.add(_spec("test/slow-sync"), lambda ctx: SlowSync())
    registry.add(_spec("test/slow-async"), lambda ctx: SlowAsync())
    registry.add(
        EnvSpec(
            id="test/alternating",
            description="two players alternate",
            observation_space=TextSpace(),
            action_space=DiscreteSpace(2),
            kind=EnvKind.TURN_BASED,
            agents=("north", "south"),
            max_episode_steps=10,
        ),
        _alternating,
    )


def _alternating(ctx: EnvContext) -> Alternating:
    if ctx.options.get("fail_to_start"):
        raise ValueError("option fail_to_start was set")
    return Alternating()


@hookimpl
def palaestra_episode_finished(summary: EpisodeSummary, trajectory: list[dict[str, Any]]) -> None:
    FINISHED.append(summary)
