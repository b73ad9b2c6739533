"""A third-party-style plugin loaded only by the tests with `--plugin cli_plugin_for_tests`: one
environment plus the client-side hooks (a scripted agent, a text drawing, a CLI subcommand)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import numpy as np

from palaestra import (
    Action,
    AgentResult,
    BoxSpace,
    DiscreteSpace,
    Env,
    EnvContext,
    EnvSpec,
    Observation,
    RewardComponent,
    RewardComponentSpec,
    RewardKind,
    StepResult,
    hookimpl,
)
from palaestra.hookspecs import ScriptedPolicy
from palaestra.registry import EnvRegistry
from palaestra.types import DEFAULT_AGENT

SPEC = EnvSpec(
    id="clitest/pick-three",
    description="Pick action 3 to win; anything else loses. Observations are a 2x2 board.",
    observation_space=BoxSpace((2, 2), "float32", (0.0,) * 4, (1.0,) * 4),
    action_space=DiscreteSpace(5),
    reward_components=(RewardComponentSpec("won", RewardKind.OUTCOME, "1 for action 3"),),
    max_episode_steps=3,
)


class PickThree(Env):
    runs_inline = True

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        return StepResult.single(AgentResult(observation=Observation(tensor=np.eye(2, dtype=np.float32))))

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        won = next(iter(actions.values())).discrete == 3
        return StepResult.single(
            AgentResult(
                observation=Observation(tensor=np.zeros((2, 2), dtype=np.float32)),
                components=[RewardComponent("won", RewardKind.OUTCOME, float(won))],
                terminated=True,
            )
        )


def make(context: EnvContext) -> PickThree:
    return PickThree()


class LyingReward(PickThree):
    """Returns components AND a reward that is not their sum: the scalar reward rule refuses it."""

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        result = super().step(actions)
        result.agents[DEFAULT_AGENT].reward = 5.0
        return result


class NoStep(Env):
    """Forgot `step`: cannot be instantiated (registering the class itself would be refused)."""

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        return StepResult.single(AgentResult())


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    registry.add(SPEC, make)
    registry.add(EnvSpec(**{**vars(SPEC), "id": "clitest/lying-reward"}), lambda context: LyingReward())
    registry.add(EnvSpec(**{**vars(SPEC), "id": "clitest/no-step"}), lambda context: NoStep())  # type: ignore[abstract]


@hookimpl
def palaestra_scripted_policy(spec: EnvSpec, seed: int | None) -> ScriptedPolicy | None:
    if spec.id != SPEC.id:
        return None
    return lambda step: {DEFAULT_AGENT: Action(discrete=3)}


@hookimpl
def palaestra_render_text(spec: EnvSpec, observation: Observation) -> str | None:
    if spec.id != SPEC.id or observation.tensor is None:
        return None
    return "BOARD " + " ".join(str(int(v)) for v in observation.tensor.reshape(-1))


@hookimpl
def palaestra_cli_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hello = commands.add_parser("clitest-hello", help="a subcommand contributed by a plugin")
    hello.add_argument("name")
    hello.set_defaults(handler=lambda args: print(f"hello {args.name} from a plugin") or 0)
