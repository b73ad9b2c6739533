# file: src/hello_palaestra/__init__.py
"""hello-palaestra: guess a secret number between 1 and 100; the environment says higher or lower."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
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
from palaestra.hookspecs import ScriptedPolicy
from palaestra.registry import EnvRegistry
from palaestra.types import DEFAULT_AGENT, EpisodeStep

__version__ = "0.1.0"
MAX_GUESSES = 10


class GuessTheNumber(Env):
    runs_inline = True  # pure Python, microseconds per step: no worker thread needed

    def __init__(self, max_guesses: int = MAX_GUESSES) -> None:
        self.max_guesses = max_guesses
        self.secret = 0
        self.guesses = 0

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        self.secret = random.Random(seed).randint(1, 100)  # same seed, same episode
        self.guesses = 0
        prompt = Message("user", f"I picked a number from 1 to 100. You have {self.max_guesses} guesses.")
        return StepResult.single(AgentResult(observation=Observation(messages=[prompt])))

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        text = next(iter(actions.values())).as_text()
        self.guesses += 1
        found = re.search(r"-?\d+", text)
        if found is None:  # the policy's mistake: its format penalty, never an error
            return self._reply("Please answer with a number.", won=False, well_formed=False)
        guess = int(found.group())
        if guess == self.secret:
            return self._reply(f"Yes, {guess}!", won=True, well_formed=True)
        return self._reply("Higher." if guess < self.secret else "Lower.", won=False, well_formed=True)

    def _reply(self, text: str, won: bool, well_formed: bool) -> StepResult:
        return StepResult.single(
            AgentResult(
                observation=Observation(messages=[Message("user", text)]),  # only the NEW messages
                components=[  # the reward, itemised; leave AgentResult.reward unset: it is their sum
                    RewardComponent("won", RewardKind.OUTCOME, float(won)),
                    RewardComponent("format", RewardKind.FORMAT, 0.0 if well_formed else -0.1),
                ],
                terminated=won,
                truncated=not won and self.guesses >= self.max_guesses,  # every episode ends by itself
            )
        )


SPEC = EnvSpec(
    id="hello/guess-the-number",
    description="Guess a number from 1 to 100 with higher/lower hints.",
    observation_space=ChatSpace(),
    action_space=ChatSpace(),
    reward_components=(
        RewardComponentSpec("won", RewardKind.OUTCOME, "1 when the guess is right", low=0.0, high=1.0),
        RewardComponentSpec(
            "format", RewardKind.FORMAT, "-0.1 for a reply without a number", low=-0.1, high=0.0
        ),
    ),
    tags=("example",),
    max_episode_steps=MAX_GUESSES,
    options_schema={
        "type": "object",
        "properties": {"max_guesses": {"type": "integer", "minimum": 1, "maximum": MAX_GUESSES}},
        "additionalProperties": False,
    },
)


def make_env(context: EnvContext) -> GuessTheNumber:
    # context.options: the client's open options, checked against SPEC.options_schema (integers are ints).
    # context.config: this plugin's table in the server's TOML ([plugins.hello] for the entry point "hello").
    return GuessTheNumber(
        int(context.options.get("max_guesses", context.config.get("max_guesses", MAX_GUESSES)))
    )


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    registry.add(SPEC, make_env)


def binary_search() -> ScriptedPolicy:
    """A scripted agent: halves the interval after each hint."""
    low, high, guess = 1, 100, 50

    def act(step: EpisodeStep) -> dict[str, Action]:
        nonlocal low, high, guess
        hint = step.result.observation.messages[-1].content
        if hint == "Higher.":
            low = guess + 1
        elif hint == "Lower.":
            high = guess - 1
        guess = (low + high) // 2
        return {DEFAULT_AGENT: Action(text=f"My guess: {guess}")}

    return act


@hookimpl
def palaestra_scripted_policy(spec: EnvSpec, seed: int | None) -> ScriptedPolicy | None:
    # `palaestra run` asks every plugin; answer only for your own environments.
    return binary_search() if spec.id == SPEC.id else None
