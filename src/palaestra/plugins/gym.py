"""The `gym` plugin: serves any installed Gymnasium environment as `gym/<id>` (e.g. `gym/CartPole-v1`).

A few classic ones are listed in the catalog up front (their newest version in the installed Gymnasium);
every other installed id is built on first use. Seeds go to `env.reset(seed=...)`, Gymnasium's time limits
come back as truncation, and the spaces are described in the catalog. Observations travel as tensors,
actions as discrete or tensor actions.

Open options named like a parameter of the environment's constructor (`is_slippery`, `map_name`,
`render_mode`...) go to `gym.make`; the others go to `env.reset(options=...)`. With a `render_mode`
("ansi" or "rgb_array") every result's info carries the frame under "render". An id whose optional
dependency is missing (Box2D, MuJoCo) answers FAILED_PRECONDITION naming the extra to install.
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

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
from palaestra.env import EnvFactory, VectorEnv, VectorizedFactory, VectorStep
from palaestra.registry import EnvRegistry, EnvUnavailable
from palaestra.types import Space

PREFIX = "gym/"
# Listed in the catalog up front, each at the newest version the installed Gymnasium registers.
LISTED_NAMES = ("CartPole", "MountainCar", "Acrobot", "Pendulum", "FrozenLake", "Taxi")
RENDER_MODES = ("ansi", "rgb_array")
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


def listed_ids() -> list[str]:
    """The catalog's classic ids, each at the newest version registered (Taxi-v3 became Taxi-v4)."""
    ids = []
    for name in LISTED_NAMES:
        version = gym.envs.registration.find_highest_version(None, name)
        if version is not None:
            ids.append(gym.envs.registration.get_env_id(None, name, version))
    return ids


# Open and reset options go to `env.reset(options=...)`, except those named like a constructor
# parameter, which go to `gym.make`. Gymnasium environments define their own reset options; the
# classic-control ones take `low`/`high` bounds of the initial state. Others are passed through, and an
# environment that refuses them answers INVALID_ARGUMENT.
OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "low": {"type": "number", "description": "a number: lower bound of the initial state"},
        "high": {"type": "number", "description": "a number: upper bound of the initial state"},
    },
}
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}
_EXTRAS = {"box2d": "box2d", "mujoco": "mujoco", "atari": "atari", "phys2d": "jax", "tabular": "jax"}


def constructor_parameters(gym_spec: gym.envs.registration.EnvSpec) -> dict[str, dict[str, Any]]:
    """JSON Schemas of the environment constructor's keyword parameters whose defaults are plain values
    (these options go to `gym.make`); empty when the entry point cannot be inspected."""
    entry = gym_spec.entry_point
    try:
        creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
        signature = inspect.signature(creator) if callable(creator) else None
    except (ImportError, AttributeError, ValueError, TypeError, gym.error.Error):
        return {}
    if signature is None:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for name, parameter in signature.parameters.items():
        default = gym_spec.kwargs.get(name, parameter.default)
        kind = _JSON_TYPES.get(type(default))
        if name == "render_mode":
            found[name] = {"enum": list(RENDER_MODES), "description": "frames in info['render']"}
        elif kind is not None:
            found[name] = {"type": kind, "description": f"gym.make({name}=...), default {default!r}"}
    return found


def _extra_for(gym_spec: gym.envs.registration.EnvSpec) -> str:
    parts = str(gym_spec.entry_point).split(":")[0].split(".")
    for part in parts:
        if part in _EXTRAS:
            return f'pip install "gymnasium[{_EXTRAS[part]}]"'
    return f"install the package that provides {gym_spec.entry_point}"


def _render(env: gym.Env[Any, Any]) -> Any:
    frame = env.render()
    if isinstance(frame, np.ndarray):
        data = np.ascontiguousarray(frame, dtype=np.uint8)
        return {"shape": list(data.shape), "rgb": base64.b64encode(data.tobytes()).decode("ascii")}
    return frame


class GymEnv(Env):
    def __init__(self, env: gym.Env[Any, Any], make_options: frozenset[str] = frozenset()) -> None:
        self.env = env
        self.make_options = make_options  # open options already given to gym.make, not to reset
        self.renders = env.render_mode in RENDER_MODES
        self.obs_dtype = env.observation_space.dtype or np.dtype("int64")
        self.discrete_action = isinstance(env.action_space, gym.spaces.Discrete)

    def _observation(self, obs: Any) -> Observation:
        return Observation(tensor=np.asarray(obs, dtype=self.obs_dtype))

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {**info, "render": _render(self.env)} if self.renders else info

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        options = {k: v for k, v in (options or {}).items() if k not in self.make_options}
        if options:
            try:
                obs, info = self.env.reset(seed=seed, options=dict(options))
            except (ValueError, TypeError, KeyError, AssertionError) as exc:
                # Gymnasium environments check their own reset options: a refusal is the client's mistake.
                raise InvalidAction(f"the reset options {dict(options)} were refused: {exc}") from None
        else:
            obs, info = self.env.reset(seed=seed)
        return StepResult.single(
            AgentResult(observation=self._observation(obs), reward=0.0, info=self._info(info))
        )

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
                info=self._info(info),
            )
        )

    def close(self) -> None:
        self.env.close()


AUTORESET_MODES = {
    "next_step": AutoresetMode.NEXT_STEP,
    "same_step": AutoresetMode.SAME_STEP,
    "disabled": AutoresetMode.DISABLED,
}


class GymVectorEnv(VectorEnv):
    """N episodes as one Gymnasium vector environment (`gym.make_vec`): one call steps them all.
    Next-step autoreset without reset options uses the environment's own vector entry point where it has
    one (CartPole's numpy implementation); otherwise Gymnasium's `SyncVectorEnv`, which has every
    autoreset mode and `reset_mask`."""

    def __init__(
        self, gym_id: str, num_envs: int, autoreset_mode: str, make_kwargs: Mapping[str, Any] | None = None
    ) -> None:
        mode = AUTORESET_MODES[autoreset_mode]
        kwargs = dict(make_kwargs or {})
        entry_point = gym.spec(gym_id).vector_entry_point
        self.native = entry_point is not None and mode is AutoresetMode.NEXT_STEP and not kwargs
        if self.native:
            self.env = gym.make_vec(gym_id, num_envs, vectorization_mode="vector_entry_point")
        else:
            self.env = gym.make_vec(
                gym_id, num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kwargs
            )
        self.num_envs = num_envs
        self.same_step = mode is AutoresetMode.SAME_STEP
        self.obs_dtype = self.env.single_observation_space.dtype or np.dtype("int64")
        self.discrete = isinstance(self.env.single_action_space, gym.spaces.Discrete)

    def reset(
        self, seed: int | None, options: Mapping[str, Any], mask: np.ndarray | None = None
    ) -> VectorStep:
        reset_options: dict[str, Any] = dict(options)
        if mask is not None and not mask.all():
            if self.native:
                raise InvalidAction(
                    "this vector (next-step autoreset, native vector entry point) resets all its episodes "
                    "at once; a reset_mask needs the same_step or disabled autoreset mode"
                )
            reset_options["reset_mask"] = mask
        try:
            obs, info = self.env.reset(seed=seed, options=reset_options or None)
        except (ValueError, TypeError, KeyError, AssertionError) as exc:
            raise InvalidAction(f"the reset options {dict(options)} were refused: {exc}") from None
        zeros = np.zeros(self.num_envs, dtype=np.bool_)
        infos = _per_episode(info, self.num_envs)
        return VectorStep(self._observations(obs), np.zeros(self.num_envs), zeros, zeros.copy(), infos)

    def step(self, actions: np.ndarray) -> VectorStep:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        final_mask, final_obs = None, None
        final_infos: list[dict[str, Any]] = []
        if self.same_step and info:
            info = dict(info)
            final_obs_column = info.pop("final_obs", None)
            found = info.pop("_final_obs", None)
            final_info = info.pop("final_info", None)
            info.pop("_final_info", None)
            if found is not None and np.any(found):
                final_mask = np.asarray(found, dtype=np.bool_)
                final_obs = self._observations(np.zeros_like(obs))
                for i in np.flatnonzero(final_mask):
                    final_obs[i] = final_obs_column[i]
                final_infos = _per_episode(final_info or {}, self.num_envs)
        return VectorStep(
            self._observations(obs),
            np.asarray(rewards, dtype=np.float64),
            np.asarray(terminated, dtype=np.bool_),
            np.asarray(truncated, dtype=np.bool_),
            _per_episode(info, self.num_envs),
            final_mask,
            final_obs,
            final_infos,
        )

    def _observations(self, obs: Any) -> np.ndarray:
        return np.asarray(obs, dtype=self.obs_dtype)

    def close(self) -> None:
        self.env.close()


def _per_episode(info: Mapping[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium's vector infos (one array per key, with a `_key` mask) as one dict per episode;
    [] when there are none."""
    if not info:
        return []
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, column in info.items():
        if key.startswith("_"):
            continue
        mask = info.get("_" + key)
        for i in range(num_envs):
            if mask is None or mask[i]:
                value = column[i] if isinstance(column, np.ndarray | list | tuple) else column
                out[i][key] = _per_episode(value, 1)[0] if isinstance(value, dict) and value else value
    return out


def resolve(env_id: str) -> tuple[EnvSpec, EnvFactory] | None:
    gym_id = env_id.removeprefix(PREFIX)
    if gym_id not in gym.registry:
        return None
    gym_spec = gym.spec(gym_id)
    try:
        probe = gym.make(gym_id)  # builds once to read the spaces; closed at once
    except (gym.error.DependencyNotInstalled, ImportError) as exc:  # says what to install
        raise EnvUnavailable(
            f"{env_id} needs an optional dependency that this server lacks ({exc}); on the server, "
            f"{_extra_for(gym_spec)}"
        ) from None
    make_parameters = constructor_parameters(gym_spec)
    schema = {**OPTIONS_SCHEMA, "properties": {**OPTIONS_SCHEMA["properties"], **make_parameters}}
    try:
        spec = EnvSpec(
            id=env_id,
            description=f"Gymnasium {gym_id} ({gym_spec.entry_point})",
            observation_space=space_from_gym(probe.observation_space),
            action_space=space_from_gym(probe.action_space),
            tags=("builtin", "gymnasium", "classic-rl"),
            max_episode_steps=gym_spec.max_episode_steps or 0,
            options_schema=schema,
        )
    finally:
        probe.close()
    inline = str(gym_spec.entry_point).startswith(INLINE_ENTRY_POINTS)
    env_class = type("InlineGymEnv", (GymEnv,), {"runs_inline": True}) if inline else GymEnv

    def factory(context: EnvContext) -> GymEnv:
        kwargs = {k: v for k, v in context.options.items() if k in make_parameters}
        try:
            env = gym.make(gym_id, **kwargs)
        except (TypeError, KeyError, gym.error.Error) as exc:  # the options were refused: client's mistake
            raise ValueError(f"gym.make({gym_id!r}, **{kwargs}) refused the options: {exc}") from None
        return env_class(env, frozenset(kwargs))

    if not isinstance(probe.observation_space, gym.spaces.Box | gym.spaces.Discrete) or not inline:
        return spec, factory

    def make_vector(context: EnvContext, num_envs: int, autoreset_mode: str) -> GymVectorEnv:
        kwargs = {k: v for k, v in context.options.items() if k in make_parameters}
        try:
            return GymVectorEnv(gym_id, num_envs, autoreset_mode, kwargs)
        except (TypeError, KeyError, gym.error.Error) as exc:
            raise ValueError(f"gym.make_vec({gym_id!r}, **{kwargs}) refused the options: {exc}") from None

    return spec, VectorizedFactory(factory, make_vector)


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    for gym_id in config.get("envs", listed_ids()):
        found = resolve(PREFIX + gym_id)
        if found is not None:
            registry.add(*found)
    registry.add_resolver(PREFIX, resolve)
