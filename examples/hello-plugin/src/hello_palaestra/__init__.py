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

__version__ = "0.1.0"
MAX_GUESSES = 10


class GuessTheNumber(Env):
    runs_inline = True  # pure Python, microseconds per step

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        self.secret = random.Random(seed).randint(1, 100)
        self.guesses = 0
        prompt = Message("user", f"I picked a number from 1 to 100. You have {MAX_GUESSES} guesses.")
        return StepResult.single(AgentResult(observation=Observation(messages=[prompt])))

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        text = next(iter(actions.values())).as_text()
        self.guesses += 1
        found = re.search(r"-?\d+", text)
        if found is None:
            return self._reply("Please answer with a number.", won=False, well_formed=False)
        guess = int(found.group())
        if guess == self.secret:
            return self._reply(f"Yes, {guess}!", won=True, well_formed=True)
        return self._reply("Higher." if guess < self.secret else "Lower.", won=False, well_formed=True)

    def _reply(self, text: str, won: bool, well_formed: bool) -> StepResult:
        out_of_guesses = self.guesses >= MAX_GUESSES
        return StepResult.single(
            AgentResult(
                observation=Observation(messages=[Message("user", text)]),
                components=[
                    RewardComponent("won", RewardKind.OUTCOME, float(won)),
                    RewardComponent("format", RewardKind.FORMAT, 0.0 if well_formed else -0.1),
                ],
                terminated=won,
                truncated=not won and out_of_guesses,
            )
        )


SPEC = EnvSpec(
    id="hello/guess-the-number",
    description="Guess a number from 1 to 100 with higher/lower hints.",
    observation_space=ChatSpace(),
    action_space=ChatSpace(),
    reward_components=(
        RewardComponentSpec("won", RewardKind.OUTCOME, "1 when the guess is right"),
        RewardComponentSpec("format", RewardKind.FORMAT, "-0.1 for a reply without a number"),
    ),
    tags=("example",),
    max_episode_steps=MAX_GUESSES,
)


def make_env(context: EnvContext) -> GuessTheNumber:
    return GuessTheNumber()


@hookimpl
def palaestra_register_environments(registry: Any, config: Mapping[str, Any]) -> None:
    registry.add(SPEC, make_env)
