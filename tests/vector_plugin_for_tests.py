"""A plugin loaded only by tests/test_vector.py: a vector environment that fails on purpose, and an
environment without a vector step (served by the server's per-episode fallback).

`vectortest/failing`: action row 0 says what its vector step does: 0 steps normally, 1 raises, 2 returns
too few rows (a broken vector contract).
`vectortest/walk`: `Walk` (a Gymnasium env, so tests can run it locally in a `SyncVectorEnv`) behind a
plain single-episode factory; its episodes run in the server's environment threads (not inline). An
episode reset with the option `refuse_seed` equal to its seed refuses it (InvalidAction)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
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
from palaestra.env import InvalidAction, VectorEnv, VectorizedFactory, VectorStep
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


class Walk(gym.Env[np.ndarray, np.int64]):
    """A short random walk: action 1 steps +1, 0 steps -1; terminated at |position| 3, truncated after 6
    steps. The observation's second entry and the reset info draw from the episode's random stream."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.position, self.steps = 0, 0
        return self._observation(), {"start": float(self.np_random.random())}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.position += 1 if action else -1
        self.steps += 1
        terminated = abs(self.position) >= 3
        truncated = not terminated and self.steps >= 6
        return self._observation(), float(self.position), terminated, truncated, {"steps": float(self.steps)}

    def _observation(self) -> np.ndarray:
        return np.array([self.position, self.np_random.random()], dtype=np.float32)


class WalkEpisode(Env):
    """One `Walk` episode behind the plugin API (no vector step registered for it)."""

    def __init__(self) -> None:
        self.env = Walk()

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        if seed is not None and seed == (options or {}).get("refuse_seed"):
            raise InvalidAction(f"this episode refuses seed {seed}")
        obs, info = self.env.reset(seed=seed)
        return StepResult.single(AgentResult(observation=Observation(tensor=obs), info=info))

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        [action] = actions.values()
        obs, reward, terminated, truncated, info = self.env.step(np.int64(action.discrete or 0))
        result = AgentResult(Observation(tensor=obs), reward, terminated=terminated, truncated=truncated)
        result.info = info
        return StepResult.single(result)


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
    walk = EnvSpec(
        id="vectortest/walk",
        description="test-only tensor environment without a vector step",
        observation_space=BoxSpace(shape=(2,), low=(-10.0, -10.0), high=(10.0, 10.0)),
        action_space=DiscreteSpace(n=2),
    )
    registry.add(walk, lambda ctx: WalkEpisode())
    limited = EnvSpec(
        id="vectortest/walk-limited",
        description="vectortest/walk with a declared limit of 2 steps (the server truncates there)",
        observation_space=walk.observation_space,
        action_space=walk.action_space,
        max_episode_steps=2,
    )
    registry.add(limited, lambda ctx: WalkEpisode())
