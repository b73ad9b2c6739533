"""A plugin loaded only by tests/test_vector.py: a vector environment that fails on purpose.

Action row 0 says what its vector step does: 0 steps normally, 1 raises, 2 returns too few rows
(a broken vector contract)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from palaestra import (
    Action,
    AgentResult,
    BoxSpace,
    DiscreteSpace,
    Env,
    EnvSpec,
    Observation,
    StepResult,
    hookimpl,
)
from palaestra.env import VectorEnv, VectorizedFactory, VectorStep
from palaestra.registry import EnvRegistry

SPEC = EnvSpec(
    id="vectortest/failing",
    description="test-only vector environment",
    observation_space=BoxSpace(shape=(2,)),
    action_space=DiscreteSpace(n=3),
)


class Single(Env):
    runs_inline = True

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        return StepResult.single(AgentResult(observation=Observation(tensor=np.zeros(2, np.float32))))

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        return self.reset()


class Failing(VectorEnv):
    def __init__(self, num_envs: int, width: int = 2) -> None:
        self.num_envs = num_envs
        self.width = width

    def _columns(self, rows: int) -> VectorStep:
        return VectorStep(
            np.zeros((rows, self.width), np.float32),
            np.ones(rows),
            np.zeros(rows, np.bool_),
            np.zeros(rows, np.bool_),
        )

    def reset(
        self, seed: int | None, options: Mapping[str, Any], mask: np.ndarray | None = None
    ) -> VectorStep:
        return self._columns(self.num_envs)

    def step(self, actions: np.ndarray) -> VectorStep:
        if actions[0] == 1:
            raise RuntimeError("the simulator crashed")
        return self._columns(self.num_envs - 1 if actions[0] == 2 else self.num_envs)


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    registry.add(SPEC, VectorizedFactory(lambda ctx: Single(), lambda ctx, n, mode: Failing(n)))
    # 512 floats per observation: 1024 episodes need 2 MiB per reply.
    wide = EnvSpec(
        id="vectortest/wide",
        description="test-only vector environment with wide observations",
        observation_space=BoxSpace(shape=(512,)),
        action_space=DiscreteSpace(n=3),
    )
    registry.add(wide, VectorizedFactory(lambda ctx: Single(), lambda ctx, n, mode: Failing(n, 512)))
