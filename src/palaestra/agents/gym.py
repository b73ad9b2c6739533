"""The Gymnasium view of one remote episode: `RemoteEnv` (N episodes in one message: `RemoteVectorEnv`,
in palaestra.agents.vector).

```python
env = RemoteEnv("127.0.0.1:50051", "gym/CartPole-v1")
obs, info = env.reset(seed=0)
obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
```

Chat environments appear as text observations (the new messages' contents joined) and text actions.
An infrastructure failure on the server raises `InfraFailureError`: it is never turned into a reward.

Importing this module registers the server's environments with Gymnasium: `palaestra/<id>` for every id
in the installed Gymnasium registry (served as `gym/<id>`), and `palaestra/Remote-v0` for any other
environment (`env_id=` names it). Keywords other than the connection's go to the remote `gym.make`
(`is_slippery`, `map_name`...) or reset, as open options; `render_mode` is "ansi" or "rgb_array"::

    import palaestra.agents.gym  # or gym.make("palaestra.agents.gym:palaestra/FrozenLake-v1", ...)
    env = gym.make("palaestra/FrozenLake-v1", address="127.0.0.1:50051", token=None, is_slippery=False)
    env = gym.make("palaestra/Remote-v0", env_id="rg/leg_counting", address="127.0.0.1:50051")
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from palaestra import types as t
from palaestra.agents.client import Client

TEXT_LIMIT = 1 << 16
RENDER_MODES = ("ansi", "rgb_array")


class InfraFailureError(RuntimeError):
    """The server's infrastructure failed during this episode; its rewards must not be used."""


def gym_space(space: t.Space) -> gym.Space[Any]:
    """The Gymnasium space for a Palaestra space (chat and text become Text spaces)."""
    match space:
        case t.DiscreteSpace(n=n, start=start):
            return gym.spaces.Discrete(n, start=start)
        case t.BoxSpace(shape=shape, dtype=dtype, low=low, high=high):
            lows = np.asarray(low, dtype=dtype).reshape(shape) if low else -np.inf
            highs = np.asarray(high, dtype=dtype).reshape(shape) if high else np.inf
            return gym.spaces.Box(lows, highs, shape=shape, dtype=np.dtype(dtype))  # type: ignore[arg-type]
        case t.MultiDiscreteSpace(nvec=nvec):
            return gym.spaces.MultiDiscrete(list(nvec))
        case t.MultiBinarySpace(shape=shape):
            return gym.spaces.MultiBinary(list(shape))
        case t.TextSpace(max_length=max_length, min_length=min_length):
            return gym.spaces.Text(max_length or TEXT_LIMIT, min_length=min_length, charset=_PRINTABLE)
        case _:
            return gym.spaces.Text(TEXT_LIMIT, min_length=0, charset=_PRINTABLE)


_PRINTABLE = frozenset(chr(c) for c in range(32, 127)) | {"\n", "\t"}


def _observation(space: gym.Space[Any], result: t.AgentResult) -> Any:
    obs = result.observation
    if obs.tensor is not None:
        if isinstance(space, gym.spaces.Discrete):
            return np.int64(obs.tensor)
        return np.asarray(obs.tensor, dtype=space.dtype)
    return "\n".join(m.content for m in obs.messages)[:TEXT_LIMIT]


def connect(address_or_client: str | Client, client_args: Mapping[str, Any]) -> tuple[Client, bool]:
    """The client a wrapper uses, and whether the wrapper made it (and so closes it when it closes)."""
    if isinstance(address_or_client, Client):
        return address_or_client, False
    return Client(address_or_client, **client_args), True


def _check(step: t.EpisodeStep) -> t.EpisodeStep:
    if step.infra_failure is not None:
        raise InfraFailureError(f"{step.infra_failure.source}: {step.infra_failure.message}")
    return step


class RemoteEnv(gym.Env[Any, Any]):
    """One remote episode behind the `gymnasium.Env` API (single-agent environments)."""

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES)}

    def __init__(
        self,
        address_or_client: str | Client,
        env_id: str,
        options: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        **client_args: Any,
    ) -> None:
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
        self.render_mode = render_mode
        self._frame: Any = None
        self._address, self._client_kwargs = address_or_client, client_args
        self.client, self._owns_client = connect(address_or_client, client_args)
        self.env_id = env_id
        self.open_options = dict(options or {})
        if render_mode is not None:
            self.open_options["render_mode"] = render_mode  # the server renders and sends the frames
        self.remote_spec = self.client.describe(env_id)
        self.observation_space = gym_space(self.remote_spec.observation_space)
        self.action_space = gym_space(self.remote_spec.action_space)
        self.episode_id: str | None = None

    def _take_frame(self, info: dict[str, Any]) -> dict[str, Any]:
        if self.render_mode is not None and "render" in info:
            frame = info.pop("render")
            if isinstance(frame, Mapping) and "rgb" in frame:
                shape = tuple(int(n) for n in frame["shape"])
                frame = np.frombuffer(base64.b64decode(frame["rgb"]), dtype=np.uint8).reshape(shape)
            self._frame = frame
        return info

    def render(self) -> Any:
        """The last frame the server rendered: text ("ansi") or an RGB array ("rgb_array")."""
        if self.render_mode is None:
            return None
        return self._frame

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        if self.client.closed and isinstance(self._address, str):  # reset after close(): connect again
            self.client = Client(self._address, **self._client_kwargs)
        if self.episode_id is None:
            [step] = self.client.open(
                self.env_id, seed=seed, options={**self.open_options, **(options or {})}
            )
            self.episode_id = step.episode_id
        else:
            step = self.client.reset(self.episode_id, seed=seed, options=options)
        result = self._checked(step).result
        return _observation(self.observation_space, result), self._take_frame(dict(result.info))

    def _checked(self, step: t.EpisodeStep) -> t.EpisodeStep:
        """Raise InfraFailureError for an infrastructure failure; the failed episode is closed, so the
        next reset() opens a new one (after a server restart, on the new server)."""
        if step.infra_failure is not None and self.episode_id is not None:
            with contextlib.suppress(Exception):
                self.client.close(self.episode_id)
            self.episode_id = None
        return _check(step)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.episode_id is None:
            raise RuntimeError("call reset() before step()")
        result = self._checked(
            self.client.step(self.episode_id, _to_action(self.action_space, action))
        ).result
        info = self._take_frame(dict(result.info))
        if result.components:
            info["reward_components"] = {c.name: c.value for c in result.components}
        return (
            _observation(self.observation_space, result),
            result.scalar_reward,
            result.terminated,
            result.truncated,
            info,
        )

    def close(self) -> None:
        if self.episode_id is not None and not self.client.closed:
            self.client.close(self.episode_id)
        self.episode_id = None
        if self._owns_client:
            self.client.close_client()


def _to_action(space: gym.Space[Any], action: Any) -> t.Action:
    if isinstance(space, gym.spaces.Discrete):
        return t.Action(discrete=int(action))
    if isinstance(space, gym.spaces.Text):
        return t.Action(text=str(action))
    return t.Action(tensor=np.asarray(action, dtype=space.dtype))


def make_remote(
    env_id: str,
    address: str,
    token: str | None = None,
    render_mode: str | None = None,
    tls_root_cert: str | None = None,
    **options: Any,
) -> RemoteEnv:
    """The entry point of the `palaestra/...` Gymnasium ids: one remote episode of `env_id`, opened with
    `options` (they reach the remote `gym.make` or reset)."""
    return RemoteEnv(
        address, env_id, options=options, render_mode=render_mode, token=token, tls_root_cert=tls_root_cert
    )


_ENTRY_POINT = "palaestra.agents.gym:make_remote"


def register_gymnasium_ids() -> list[str]:
    """Register `palaestra/<id>` for every un-namespaced id in the installed Gymnasium registry (served
    remotely as `gym/<id>`), and `palaestra/Remote-v0` for any environment; returns the ids added."""
    added = []
    for gym_id, spec in list(gym.registry.items()):
        if spec.namespace is not None or f"palaestra/{gym_id}" in gym.registry:
            continue
        gym.register(
            f"palaestra/{gym_id}",
            entry_point=_ENTRY_POINT,
            kwargs={"env_id": f"gym/{gym_id}"},
            disable_env_checker=True,  # checked on the server, where the environment runs
        )
        added.append(f"palaestra/{gym_id}")
    if "palaestra/Remote-v0" not in gym.registry:
        gym.register("palaestra/Remote-v0", entry_point=_ENTRY_POINT, disable_env_checker=True)
        added.append("palaestra/Remote-v0")
    return added


register_gymnasium_ids()
