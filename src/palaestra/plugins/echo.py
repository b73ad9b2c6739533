"""The `echo` plugin: a trivial chat environment for tests, benchmarks and first steps.

The environment asks the agent to repeat a word; the agent's text comes back as the next user message,
and the outcome component is 1 when the agent said the word. It runs inline (microseconds per step),
so it measures the transport, not the environment.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
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
from palaestra.types import DEFAULT_AGENT, EpisodeStep

WORDS = ("apple", "river", "lantern", "orbit", "meadow", "copper", "violet", "harbor", "puzzle", "thunder")
DEFAULT_TURNS = 4

SPEC = EnvSpec(
    id="echo/text",
    description="Repeat the word you are asked for; your text is echoed back. For tests and benchmarks.",
    observation_space=ChatSpace(),
    action_space=ChatSpace(),
    reward_components=(
        RewardComponentSpec("said_word", RewardKind.OUTCOME, "1 when the reply contains the word"),
    ),
    tags=("builtin", "test", "chat"),
    max_episode_steps=64,
)


class EchoEnv(Env):
    runs_inline = True

    def __init__(self, turns: int = DEFAULT_TURNS) -> None:
        self.turns = turns
        self.word = ""
        self.turn = 0

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        self.word = random.Random(seed).choice(WORDS)
        self.turn = 0
        prompt = Message("user", f"Please say the word '{self.word}'.")
        return StepResult.single(AgentResult(observation=Observation(messages=[prompt])))

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        text = next(iter(actions.values())).as_text()
        self.turn += 1
        said = self.word in text.lower()
        reply = Message("user", f"You said: {text}")
        return StepResult.single(
            AgentResult(
                observation=Observation(messages=[reply]),
                components=[RewardComponent("said_word", RewardKind.OUTCOME, float(said))],
                terminated=said,
                truncated=not said and self.turn >= self.turns,
            )
        )


def make_echo(context: EnvContext) -> EchoEnv:
    turns = int(context.options.get("turns", context.config.get("turns", DEFAULT_TURNS)))
    if not 1 <= turns <= SPEC.max_episode_steps:
        raise ValueError(f"option 'turns' must be between 1 and {SPEC.max_episode_steps}, got {turns}")
    return EchoEnv(turns)


def say_the_word(observation: Observation) -> Action:
    """Says the word the environment asked for: the reference agent of `palaestra run echo/text`."""
    for message in observation.messages:
        if "say the word '" in message.content:
            return Action(text=message.content.split("'")[1])
    return Action(text="I do not know.")


def make_scripted_policy(env_id: str, seed: int | None = None) -> Callable[[EpisodeStep], dict[str, Action]]:
    return lambda step: {DEFAULT_AGENT: say_the_word(step.result.observation)}


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    registry.add(SPEC, make_echo)
