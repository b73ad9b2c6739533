"""A plugin loaded only by tests/test_compliance.py: one good environment and environments that each
break one rule of the environment contract, to prove the compliance suite catches them."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from functools import partial
from typing import Any

from palaestra import (
    Action,
    AgentResult,
    ChatSpace,
    Env,
    EnvContext,
    EnvSpec,
    Message,
    Observation,
    RewardComponent,
    RewardComponentSpec,
    RewardKind,
    StepResult,
    hookimpl,
)
from palaestra.registry import EnvRegistry

TOOL = {"type": "function", "function": {"name": "guess", "parameters": {"type": "object"}}}


class Guess(Env):
    """Guess a number from 1 to 3 in three tries; `flaw` names the rule this variant breaks."""

    runs_inline = True

    def __init__(self, flaw: str = "") -> None:
        self.flaw = flaw
        self.closed = 0

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        rng = random.Random() if self.flaw == "seedless" else random.Random(seed)
        self.secret, self.tries = rng.randint(1, 3), 0
        agent = "someone-else" if self.flaw == "wrong-agents" else "agent"
        first = Observation(
            messages=[Message("user", f"Guess: 1, 2 or 3 ({rng.random():.6f})")], tools=[TOOL]
        )
        return StepResult({agent: AgentResult(observation=first)})

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        action = next(iter(actions.values()))
        if action.message is not None and action.message.tool_calls and self.flaw == "json":
            json.loads(action.message.tool_calls[0].arguments)  # a RecursionError or JSONDecodeError escapes
        self.tries += 1
        won = action.as_text().strip() == str(self.secret)
        value = float("nan") if self.flaw == "nan" else float(won)
        name = "bonus" if self.flaw == "undeclared" else "won"
        done = won or self.tries >= 3
        if self.flaw.startswith("endless"):
            done = False
        return StepResult.single(
            AgentResult(
                observation=Observation(messages=[Message("user", "yes" if won else "no")]),
                components=[RewardComponent(name, RewardKind.OUTCOME, value)],
                terminated=done,
            )
        )

    def close(self) -> None:
        self.closed += 1
        if self.flaw == "close-twice" and self.closed > 1:
            raise RuntimeError("closed twice")


def _spec(env_id: str, max_steps: int = 10) -> EnvSpec:
    return EnvSpec(
        id=env_id,
        description="compliance test environment",
        observation_space=ChatSpace(),
        action_space=ChatSpace(),
        reward_components=(
            RewardComponentSpec("won", RewardKind.OUTCOME, "1 for the right guess", 0.0, 1.0),
        ),
        max_episode_steps=max_steps,
        options_schema={"type": "object", "additionalProperties": False},
    )


def _make(flaw: str, ctx: EnvContext) -> Guess:
    return Guess(flaw)


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    for flaw in ("", "endless", "seedless", "nan", "undeclared", "json", "wrong-agents", "close-twice"):
        registry.add(_spec(f"bad/{flaw or 'good'}"), partial(_make, flaw))
    registry.add(_spec("bad/endless-unbounded", max_steps=0), lambda ctx: Guess("endless"))
