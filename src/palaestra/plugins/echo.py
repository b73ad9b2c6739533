"""The `echo` plugin: a trivial chat environment for tests, benchmarks and first steps.

The environment asks the agent to repeat a word; the agent's text comes back as the next user message,
and the outcome component is 1 when the agent said the word. It runs inline (microseconds per step),
so it measures the transport, not the environment. Its id is `echo`; `echo/text`, its former id, still
resolves to it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
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
from palaestra.env import EnvFactory
from palaestra.hookspecs import ScriptedPolicy
from palaestra.registry import EnvRegistry
from palaestra.types import DEFAULT_AGENT

WORDS = ("apple", "river", "lantern", "orbit", "meadow", "copper", "violet", "harbor", "puzzle", "thunder")
DEFAULT_TURNS = 4

SPEC = EnvSpec(
    id="echo",
    description="Repeat the word you are asked for; your text is echoed back. For tests and benchmarks.",
    observation_space=ChatSpace(),
    action_space=ChatSpace(),
    reward_components=(
        RewardComponentSpec("said_word", RewardKind.OUTCOME, "1 when the reply contains the word", 0.0, 1.0),
    ),
    tags=("builtin", "test", "chat"),
    max_episode_steps=64,
    options_schema={
        "type": "object",
        "properties": {
            "turns": {
                "type": "integer",
                "minimum": 1,
                "maximum": 64,
                "description": "an integer from 1 to 64: replies allowed before the episode is truncated",
            }
        },
        "additionalProperties": False,
    },
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
    """Says the word the environment asked for: the reference agent of `palaestra run echo`."""
    for message in observation.messages:
        if "say the word '" in message.content:
            return Action(text=message.content.split("'")[1])
    return Action(text="I do not know.")


ALIAS = "echo/text"  # the former id, kept working


def resolve_alias(env_id: str) -> tuple[EnvSpec, EnvFactory] | None:
    if env_id != ALIAS:
        return None
    return replace(SPEC, id=ALIAS, description=f"The former id of `echo`: {SPEC.description}"), make_echo


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    registry.add(SPEC, make_echo)
    registry.add_resolver("echo/", resolve_alias)


@hookimpl
def palaestra_scripted_policy(spec: EnvSpec, seed: int | None) -> ScriptedPolicy | None:
    if spec.id not in (SPEC.id, ALIAS):
        return None
    return lambda step: {DEFAULT_AGENT: say_the_word(step.result.observation)}
