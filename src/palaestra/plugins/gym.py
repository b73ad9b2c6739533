"""The `gym` plugin: serves any installed Gymnasium environment as `gym/<id>` (e.g. `gym/CartPole-v1`).

A few classic ones are listed in the catalog up front; every other installed id is built on first use.
Seeds go to `env.reset(seed=...)`, Gymnasium's time limits come back as truncation, and the spaces are
described in the catalog. Observations travel as tensors, actions as discrete or tensor actions.
"""

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
    EnvContext,
    EnvSpec,
    InvalidAction,
    MultiBinarySpace,
    MultiDiscreteSpace,
    Observation,
    StepResult,
    TextSpace,
    hookimpl,
)
from palaestra.env import EnvFactory
from palaestra.registry import EnvRegistry
from palaestra.types import Space

PREFIX = "gym/"
LISTED = ("CartPole-v1", "MountainCar-v0", "Acrobot-v1", "Pendulum-v1", "FrozenLake-v1", "Taxi-v3")
# Pure-Python simulations that step in microseconds: run them on the event loop, skipping a thread hop.
INLINE_ENTRY_POINTS = ("gymnasium.envs.classic_control", "gymnasium.envs.toy_text")


def space_from_gym(space: gym.Space[Any]) -> Space:
    if isinstance(space, gym.spaces.Discrete):
        return DiscreteSpace(n=int(space.n), start=int(space.start))
    if isinstance(space, gym.spaces.Box):
        return BoxSpace(
            shape=tuple(space.shape),
            dtype=space.dtype.name,
            low=tuple(float(x) for x in np.ravel(space.low)),
            high=tuple(float(x) for x in np.ravel(space.high)),
        )
    if isinstance(space, gym.spaces.MultiDiscrete):
        return MultiDiscreteSpace(nvec=tuple(int(n) for n in np.ravel(space.nvec)))
    if isinstance(space, gym.spaces.MultiBinary):
        return MultiBinarySpace(shape=tuple(np.atleast_1d(space.n)))
    if isinstance(space, gym.spaces.Text):
        return TextSpace(max_length=space.max_length, min_length=space.min_length)
    raise ValueError(f"Gymnasium space {type(space).__name__} cannot be served (flatten it with a wrapper)")


# Open and reset options go to `env.reset(options=...)`. Gymnasium environments define their own; the
# classic-control ones take `low`/`high` bounds of the initial state. Others are passed through, and an
# environment that refuses them answers INVALID_ARGUMENT.
OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "low": {"type": "number", "description": "a number: lower bound of the initial state"},
        "high": {"type": "number", "description": "a number: upper bound of the initial state"},
    },
}


class GymEnv(Env):
    def __init__(self, env: gym.Env[Any, Any]) -> None:
        self.env = env
        self.obs_dtype = env.observation_space.dtype or np.dtype("int64")
        self.discrete_action = isinstance(env.action_space, gym.spaces.Discrete)

    def _observation(self, obs: Any) -> Observation:
        return Observation(tensor=np.asarray(obs, dtype=self.obs_dtype))

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        if options:
            try:
                obs, info = self.env.reset(seed=seed, options=dict(options))
            except (ValueError, TypeError, KeyError, AssertionError) as exc:
                # Gymnasium environments check their own reset options: a refusal is the client's mistake.
                raise InvalidAction(f"the reset options {dict(options)} were refused: {exc}") from None
        else:
            obs, info = self.env.reset(seed=seed)
        return StepResult.single(AgentResult(observation=self._observation(obs), reward=0.0, info=info))

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        action = next(iter(actions.values()))
        value: Any = action.discrete if self.discrete_action else action.tensor
        obs, reward, terminated, truncated, info = self.env.step(value)
        return StepResult.single(
            AgentResult(
                observation=self._observation(obs),
                reward=float(reward),
                terminated=bool(terminated),
                truncated=bool(truncated),
                info=info,
            )
        )

    def close(self) -> None:
        self.env.close()


def resolve(env_id: str) -> tuple[EnvSpec, EnvFactory] | None:
    gym_id = env_id.removeprefix(PREFIX)
    if gym_id not in gym.registry:
        return None
    gym_spec = gym.spec(gym_id)
    probe = gym.make(gym_id)  # builds once to read the spaces; closed at once
    try:
        spec = EnvSpec(
            id=env_id,
            description=f"Gymnasium {gym_id} ({gym_spec.entry_point})",
            observation_space=space_from_gym(probe.observation_space),
            action_space=space_from_gym(probe.action_space),
            tags=("builtin", "gymnasium", "classic-rl"),
            max_episode_steps=gym_spec.max_episode_steps or 0,
            options_schema=OPTIONS_SCHEMA,
        )
    finally:
        probe.close()
    inline = str(gym_spec.entry_point).startswith(INLINE_ENTRY_POINTS)
    env_class = type("InlineGymEnv", (GymEnv,), {"runs_inline": True}) if inline else GymEnv

    def factory(context: EnvContext) -> GymEnv:
        return env_class(gym.make(gym_id))

    return spec, factory


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    for gym_id in config.get("envs", LISTED):
        found = resolve(PREFIX + gym_id)
        if found is not None:
            registry.add(*found)
    registry.add_resolver(PREFIX, resolve)
