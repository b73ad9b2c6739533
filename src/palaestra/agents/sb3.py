"""Stable-Baselines3: `SB3VecEnv`, a `VecEnv` whose N environments are one server-side vector.

Every `step_wait` is ONE message each way (through `RemoteVectorEnv` with same-step autoreset, which is
SB3's convention): a finished episode's observation is already the next episode's first one, and its
last observation is in `infos[i]["terminal_observation"]`, with `infos[i]["TimeLimit.truncated"]` when it
was cut by a time limit. Seeds follow SB3 and the protocol alike: `seed(s)` seeds environment i with
s + i at the next reset.

    from stable_baselines3 import PPO
    env = SB3VecEnv("127.0.0.1:50051", "gym/CartPole-v1", num_envs=8)
    PPO("MlpPolicy", env).learn(20_000)

The environments live in the server: `get_attr` answers only `render_mode` (None), and `set_attr` and
`env_method` refuse with AttributeError, since no local object holds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from palaestra.agents.client import Client
from palaestra.agents.vector import RemoteVectorEnv


class SB3VecEnv(VecEnv):
    def __init__(
        self,
        address_or_client: str | Client,
        env_id: str,
        num_envs: int,
        options: Mapping[str, Any] | None = None,
        **client_args: Any,
    ) -> None:
        self.remote = RemoteVectorEnv(
            address_or_client,
            env_id,
            num_envs,
            autoreset_mode=AutoresetMode.SAME_STEP,
            options=options,
            **client_args,
        )
        self._actions: np.ndarray | None = None
        super().__init__(num_envs, self.remote.single_observation_space, self.remote.single_action_space)

    def reset(self) -> VecEnvObs:
        seeds = self._seeds
        seed = None if seeds[0] is None else [int(s) for s in seeds]  # type: ignore[arg-type]
        if any(options != self._options[0] for options in self._options):
            raise ValueError("SB3VecEnv resets its episodes as one vector: give every env the same options")
        options = self._options[0] if self._options and self._options[0] else None
        obs, infos = self.remote.reset(seed=seed, options=dict(options) if options else None)
        self.reset_infos = _per_env(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_async must come before step_wait")
        obs, rewards, terminated, truncated, infos = self.remote.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        per_env = _per_env(infos, self.num_envs)
        final_obs = infos.get("final_obs")
        for i, info in enumerate(per_env):
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])  # as SB3's own VecEnvs
            if dones[i]:
                info.update(info.pop("final_info", None) or {})
                info.pop("final_obs", None)
                if final_obs is not None and final_obs[i] is not None:
                    info["terminal_observation"] = final_obs[i]
        return obs, rewards.astype(np.float32), dones, per_env

    def close(self) -> None:
        self.remote.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [None] * len(self._indices(indices))
        raise AttributeError(f"{attr_name!r}: the environments of SB3VecEnv live in the server")

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"cannot set {attr_name!r}: the environments of SB3VecEnv live in the server")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        raise AttributeError(f"cannot call {method_name!r}: the environments of SB3VecEnv live in the server")

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False] * len(self._indices(indices))  # no local wrapper holds the remote environments

    def _indices(self, indices: VecEnvIndices) -> Sequence[int]:
        return list(self._get_indices(indices))


def _per_env(infos: Mapping[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium's vector infos (arrays with `_key` masks) as SB3's list of one dict per environment."""
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, column in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get("_" + key)
        if isinstance(column, dict):
            nested = _per_env(column, num_envs)
            for i in range(num_envs):
                if mask is None or mask[i]:
                    out[i][key] = nested[i]
            continue
        for i in range(num_envs):
            if mask is None or mask[i]:
                out[i][key] = column[i]
    return out
