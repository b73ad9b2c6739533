"""Game engines: a thin, uniform layer over PettingZoo AEC and parallel environments.

Everything above this module (referees, bots, matches) talks to a `Game`: who acts now, which action
indices are legal, what each seat observes, and the per-seat rewards of a move. PettingZoo stays the
source of truth for the rules; this layer only adds a ply limit (so that every game ends) and hides the
difference between turn-based (AEC) and simultaneous (parallel) environments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import gymnasium
import numpy as np

from palaestra.types import BoxSpace, DiscreteSpace, MultiDiscreteSpace, Space


class Game(Protocol):
    """The rules engine of one match. Seats are the PettingZoo agent names."""

    agents: tuple[str, ...]
    simultaneous: bool
    over: bool
    truncated: bool  # over because the ply limit was reached, not by the rules
    plies: int

    def reset(self, seed: int | None) -> None: ...

    def to_act(self) -> list[str]:
        """The seats expected to act now (all live seats in a simultaneous game; none when over)."""
        ...

    def observe(self, agent: str) -> tuple[np.ndarray, np.ndarray | None]:
        """This seat's observation tensor and action mask (None where the game has no mask)."""
        ...

    def legal(self, agent: str) -> list[int] | None:
        """Legal action indices for `agent`, or None when the game gives no mask (every action is legal)."""
        ...

    def apply(self, actions: Mapping[str, Any]) -> dict[str, float]:
        """Play the acting seats' actions; returns every seat's reward for this move."""
        ...

    @property
    def raw(self) -> Any:
        """The unwrapped PettingZoo environment, for game-specific text rendering and bots."""
        ...


def _split_observation(obs: Any, info: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """PettingZoo classic games observe {"observation", "action_mask"}; others a bare array or int."""
    if isinstance(obs, dict) and "observation" in obs:
        mask = obs.get("action_mask")
        return _as_tensor(obs["observation"]), None if mask is None else np.asarray(mask, dtype=np.int8)
    mask = info.get("action_mask")
    return _as_tensor(obs), None if mask is None else np.asarray(mask, dtype=np.int8)


def _as_tensor(value: Any) -> np.ndarray:
    array = np.asarray(value)
    # bool planes (chess) travel as int8: every client framework understands it
    return array.astype(np.int8) if array.dtype == np.bool_ else array


class AECGame:
    """A turn-based PettingZoo AEC environment."""

    simultaneous = False

    def __init__(self, make_env: Callable[[], Any], max_plies: int) -> None:
        self._env = make_env()
        self.agents = tuple(self._env.possible_agents)
        self.max_plies = max_plies
        self.over = False
        self.truncated = False
        self.plies = 0

    @property
    def raw(self) -> Any:
        return self._env.unwrapped

    def reset(self, seed: int | None) -> None:
        self._env.reset(seed=seed)
        self.over, self.truncated, self.plies = False, False, 0
        self._retire_dead_agents()

    def to_act(self) -> list[str]:
        return [] if self.over else [self._env.agent_selection]

    def observe(self, agent: str) -> tuple[np.ndarray, np.ndarray | None]:
        info = self._env.infos.get(agent, {}) if hasattr(self._env, "infos") else {}
        return _split_observation(self._env.observe(agent), info)

    def legal(self, agent: str) -> list[int] | None:
        _, mask = self.observe(agent)
        return None if mask is None else [int(i) for i in np.flatnonzero(mask)]

    def apply(self, actions: Mapping[str, Any]) -> dict[str, float]:
        agent = self._env.agent_selection
        rewards = dict.fromkeys(self.agents, 0.0)
        self._env.step(actions[agent])
        self._add_rewards(rewards)
        self.plies += 1
        self._retire_dead_agents(rewards)
        if not self.over and self.plies >= self.max_plies:
            self.over, self.truncated = True, True
        return rewards

    def _add_rewards(self, into: dict[str, float]) -> None:
        for name, value in self._env.rewards.items():
            into[name] = into.get(name, 0.0) + float(value)

    def _retire_dead_agents(self, rewards: dict[str, float] | None = None) -> None:
        """AEC envs want a None step for each finished agent; the game is over when none is left live."""
        env = self._env
        while env.agents and not self._all_done():
            current = env.agent_selection
            if not (env.terminations[current] or env.truncations[current]):
                return
            env.step(None)
            if rewards is not None:
                self._add_rewards(rewards)
        self.over = True

    def _all_done(self) -> bool:
        env = self._env
        return all(env.terminations[a] or env.truncations[a] for a in env.agents)


class ParallelGame:
    """A simultaneous-move PettingZoo parallel environment: every live seat acts each round."""

    simultaneous = True

    def __init__(self, make_env: Callable[[], Any], max_plies: int) -> None:
        self._env = make_env()
        self.agents = tuple(self._env.possible_agents)
        self.max_plies = max_plies
        self.over = False
        self.truncated = False
        self.plies = 0
        self._obs: dict[str, Any] = {}
        self._infos: dict[str, Any] = {}

    @property
    def raw(self) -> Any:
        return self._env.unwrapped

    def reset(self, seed: int | None) -> None:
        self._obs, self._infos = self._env.reset(seed=seed)
        self.over, self.truncated, self.plies = False, False, 0

    def to_act(self) -> list[str]:
        return [] if self.over else list(self._env.agents)

    def observe(self, agent: str) -> tuple[np.ndarray, np.ndarray | None]:
        return _split_observation(self._obs.get(agent, 0), self._infos.get(agent, {}))

    def legal(self, agent: str) -> list[int] | None:
        _, mask = self.observe(agent)
        return None if mask is None else [int(i) for i in np.flatnonzero(mask)]

    def apply(self, actions: Mapping[str, Any]) -> dict[str, float]:
        obs, rewards, terminations, truncations, infos = self._env.step(dict(actions))
        self._obs.update(obs)
        self._infos.update(infos)
        self.plies += 1
        if not self._env.agents or all(terminations.get(a) or truncations.get(a) for a in self._env.agents):
            self.over = True
        elif self.plies >= self.max_plies:
            self.over, self.truncated = True, True
        return {a: float(rewards.get(a, 0.0)) for a in self.agents}


# ---------------------------------------------------------------- PettingZoo modules and their spaces


def load_pettingzoo(module_path: str) -> Any:
    """Import a PettingZoo environment module by its path under `pettingzoo`, e.g. "classic/chess_v6"."""
    return importlib.import_module("pettingzoo." + module_path.replace("/", "."))


def make_game(module_path: str, max_plies: int) -> Game:
    """A `Game` for any installed PettingZoo environment module: AEC by default, parallel where it has to."""
    module = load_pettingzoo(module_path)
    if _prefers_parallel(module):
        return ParallelGame(module.parallel_env, max_plies)
    return AECGame(module.env, max_plies)


def _prefers_parallel(module: Any) -> bool:
    """Simultaneous-move games (rock-paper-scissors, MPE, butterfly) are served as parallel envs."""
    if not hasattr(module, "parallel_env"):
        return False
    if not hasattr(module, "env"):
        return True
    metadata = getattr(getattr(module, "raw_env", None), "metadata", {}) or {}
    return bool(metadata.get("is_parallelizable", False))


def to_space(space: gymnasium.Space[Any]) -> Space:
    """The Palaestra space of a gymnasium observation or action space (masks are split off first)."""
    if isinstance(space, gymnasium.spaces.Dict) and "observation" in space.spaces:
        return to_space(space.spaces["observation"])
    if isinstance(space, gymnasium.spaces.Discrete):
        return DiscreteSpace(n=int(space.n), start=int(space.start))
    if isinstance(space, gymnasium.spaces.MultiDiscrete):
        return MultiDiscreteSpace(nvec=tuple(int(n) for n in space.nvec.flatten()))
    if isinstance(space, gymnasium.spaces.Box):
        dtype = "int8" if space.dtype == np.bool_ else str(space.dtype)
        return BoxSpace(
            shape=tuple(space.shape),
            dtype=dtype,
            low=tuple(float(v) for v in np.asarray(space.low, dtype=np.float64).flatten()),
            high=tuple(float(v) for v in np.asarray(space.high, dtype=np.float64).flatten()),
        )
    raise ValueError(f"unsupported PettingZoo space {space!r}")


def observation_box(space: gymnasium.Space[Any]) -> BoxSpace:
    """Observations always travel as tensors: a Discrete observation becomes a 0-d int64 box."""
    converted = to_space(space)
    if isinstance(converted, DiscreteSpace):
        return BoxSpace(
            shape=(),
            dtype="int64",
            low=(float(converted.start),),
            high=(float(converted.start + converted.n - 1),),
        )
    if not isinstance(converted, BoxSpace):
        raise ValueError(f"unsupported PettingZoo observation space {space!r}")
    return converted


def has_action_mask(space: gymnasium.Space[Any]) -> bool:
    return isinstance(space, gymnasium.spaces.Dict) and "action_mask" in space.spaces
