"""`RemoteVectorEnv`: a server-side vector of N episodes behind Gymnasium's vector API.

```python
envs = RemoteVectorEnv("127.0.0.1:50051", "gym/CartPole-v1", num_envs=64)
obs, infos = envs.reset(seed=0)          # obs.shape == (64, 4)
obs, rewards, terms, truncs, infos = envs.step(envs.action_space.sample())
```

Every `step` is ONE message each way (a `VectorStepRequest` with one packed action tensor, answered by
stacked columns), and the server steps the N episodes with one call of the environment's vector step
(docs/protocol.md, "Vectors"); an environment whose plugin has no vector step is served the same way by
the server stepping its N episodes one by one (server/episode_vector.py). Any single-agent environment
with Box or Discrete observations qualifies; chat and text environments step per episode
(`palaestra.agents.gym.RemoteEnv`, `Client`). It follows `gymnasium.vector.VectorEnv` exactly:

* the three autoreset modes (`AutoresetMode.NEXT_STEP`, the default, `SAME_STEP`, `DISABLED`), chosen at
  construction and kept by the server; with `SAME_STEP`, `infos["final_obs"]` / `infos["final_info"]`
  (and their `_` masks) hold the ended episodes' last observations and infos, as `SyncVectorEnv` does;
* `reset(options={"reset_mask": mask})` resets only the masked episodes;
* `reset(seed=s)` seeds as the server's Gymnasium vector does (episode i gets s + i; CartPole's native
  vector, used for next-step autoreset, seeds one generator with s); `reset()` without a seed continues
  each episode's random stream (the server keeps the vector's environments between resets);
* per-episode infos as Gymnasium's dict of arrays with `_key` masks.

An infrastructure failure (the environment raised, the server restarted or the connection broke) raises
`InfraFailureError`, never a reward; the vector is then gone, and the next `reset()` opens a new one.

For Stable-Baselines3, wrap it in `palaestra.agents.sb3.SB3VecEnv`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from palaestra import wire
from palaestra.agents.client import Client, PalaestraError, StreamBroken
from palaestra.agents.gym import InfraFailureError, connect, gym_space
from palaestra.v1 import env_pb2

_MODES = {
    AutoresetMode.NEXT_STEP: env_pb2.AUTORESET_MODE_NEXT_STEP,
    AutoresetMode.SAME_STEP: env_pb2.AUTORESET_MODE_SAME_STEP,
    AutoresetMode.DISABLED: env_pb2.AUTORESET_MODE_DISABLED,
}


class RemoteVectorEnv(gym.vector.VectorEnv[Any, Any, Any]):
    """N remote episodes of one tensor environment, stepped as one vector by the server."""

    def __init__(
        self,
        address_or_client: str | Client,
        env_id: str,
        num_envs: int,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        options: Mapping[str, Any] | None = None,
        **client_args: Any,
    ) -> None:
        """`options`: the environment's open options (e.g. Gymnasium constructor arguments).
        `client_args` go to `Client` when an address is given."""
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {"autoreset_mode": self.autoreset_mode}
        self.client, self._owns_client = connect(address_or_client, client_args)
        self.env_id = env_id
        self.num_envs = num_envs
        self.open_options = dict(options or {})
        self.remote_spec = self.client.describe(env_id)
        self.single_observation_space = gym_space(self.remote_spec.observation_space)
        self.single_action_space = gym_space(self.remote_spec.action_space)
        if not isinstance(self.single_observation_space, gym.spaces.Box | gym.spaces.Discrete):
            raise ValueError(
                f"{env_id} has a {type(self.single_observation_space).__name__} observation space; "
                "RemoteVectorEnv serves tensor environments (chat and text ones step per episode)"
            )
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._discrete = isinstance(self.single_action_space, gym.spaces.Discrete)
        self._action_dtype = np.dtype(np.int64) if self._discrete else self.single_action_space.dtype
        self.vector_id = ""
        self.closed = False

    # ------------------------------------------------------------ Gymnasium's vector API

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        first = _first_seed(seed, self.num_envs)
        request = env_pb2.SessionRequest()
        if not self.vector_id:
            if mask is not None and not np.all(mask):
                raise ValueError("the first reset resets every episode; reset_mask applies afterwards")
            opening = request.vector_open
            opening.env_id, opening.num_envs = self.env_id, self.num_envs
            opening.autoreset_mode = _MODES[self.autoreset_mode]
            opening.options.CopyFrom(wire.struct_from_dict({**self.open_options, **options}))
            if first is not None:
                opening.seed = first
        else:
            resetting = request.vector_reset
            resetting.vector_id = self.vector_id
            if options:
                resetting.options.CopyFrom(wire.struct_from_dict(options))
            if first is not None:
                resetting.seed = first
            if mask is not None:
                mask = np.asarray(mask)
                if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                    raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},)")
                wire.tensor_to_proto(mask, resetting.reset_mask)
        try:
            result = self._send(request)
        except InfraFailureError:
            if request.HasField("vector_open") or (mask is not None and not np.all(mask)):
                raise  # nothing to reopen, or the unmasked episodes were lost with the vector
            return self.reset(seed=seed, options=options)  # a new vector, on the server there now
        self.vector_id = result.vector_id
        return self._observations(result.observations), self._infos(result.infos)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self.vector_id:
            raise RuntimeError("call reset() before step()")
        request = env_pb2.SessionRequest()
        request.vector_step.vector_id = self.vector_id
        wire.tensor_to_proto(np.asarray(actions, dtype=self._action_dtype), request.vector_step.actions)
        result = self._send(request)
        infos = self._infos(result.infos)
        if result.HasField("final_mask"):
            final_mask = wire.tensor_from_proto(result.final_mask)
            final_rows = self._observations(result.final_observations)
            final_infos = [wire.dict_from_struct(s) for s in result.final_infos]
            for i in np.flatnonzero(final_mask):
                ended = {"final_obs": final_rows[i], "final_info": final_infos[i] if final_infos else {}}
                infos = self._add_info(infos, ended, int(i))
        return (
            self._observations(result.observations),
            wire.tensor_from_proto(result.rewards).copy(),
            wire.tensor_from_proto(result.terminated).copy(),
            wire.tensor_from_proto(result.truncated).copy(),
            infos,
        )

    def close_extras(self, **kwargs: Any) -> None:
        if self.vector_id and not self.client.closed:
            self._close_vector(self.vector_id)
        self.vector_id = ""
        if self._owns_client:
            self.client.close_client()

    def _close_vector(self, vector_id: str) -> None:
        request = env_pb2.SessionRequest()
        request.vector_close.vector_id = vector_id
        with contextlib.suppress(PalaestraError):  # already gone with its stream or server
            self.client.send(request)

    # ------------------------------------------------------------ helpers

    def _send(self, request: env_pb2.SessionRequest) -> env_pb2.VectorResult:
        """Send a vector request. When the vector is gone (an environment failure, or the server lost it
        with the stream: a restart, a broken connection), raise InfraFailureError and forget it."""
        try:
            result = self.client.send(request).vector
        except PalaestraError as exc:
            # Only the server's own vector ids are sent: NOT_FOUND means it no longer has the vector.
            lost = isinstance(exc, StreamBroken) or exc.code is grpc.StatusCode.NOT_FOUND
            if not lost or not self.vector_id:
                raise
            lost_id, self.vector_id = self.vector_id, ""
            self._close_vector(lost_id)  # lets a client over several replicas forget it
            raise InfraFailureError(f"connection: the vector was lost ({exc})") from None
        if result.HasField("infra_failure"):
            self.vector_id = ""
            self._close_vector(result.vector_id)  # the server keeps a failed vector until it is closed
            failure = result.infra_failure
            raise InfraFailureError(f"{failure.source}: {failure.message}")
        return result

    def _observations(self, tensor: Any) -> np.ndarray:
        return wire.tensor_from_proto(tensor).copy()  # writable, as Gymnasium's own vectors return

    def _infos(self, structs: Sequence[Any]) -> dict[str, Any]:
        infos: dict[str, Any] = {}
        for i, struct in enumerate(structs):
            if struct.fields:
                infos = self._add_info(infos, wire.dict_from_struct(struct), i)
        return infos


def _first_seed(seed: int | Sequence[int] | None, num_envs: int) -> int | None:
    """The protocol seeds episode i with seed + i; a list of seeds must be of that form."""
    if seed is None or isinstance(seed, int | np.integer):
        return None if seed is None else int(seed)
    seeds = [int(s) for s in seed]
    if len(seeds) != num_envs or seeds != list(range(seeds[0], seeds[0] + num_envs)):
        raise ValueError(f"seeds must be one int or {num_envs} consecutive ints (episode i gets seed + i)")
    return seeds[0]
