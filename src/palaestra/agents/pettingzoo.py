"""PettingZoo views of served multi-agent games: `RemoteAECEnv` (turn-based) and `RemoteParallelEnv`
(simultaneous). They pass PettingZoo's `api_test` / `parallel_api_test` and seed tests.

One client controls every seat (self-play): each step sends the acting seat's action and the server
returns each seat's news. Observations look like the PettingZoo originals: ``{"observation",
"action_mask"}`` dicts where the game has action masks (the spec's tag ``action_mask``), bare arrays
otherwise. Pass open ``options`` (e.g. ``{"opponent": "minimax"}``) to get a single-seat view.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np
from pettingzoo import AECEnv, ParallelEnv

from palaestra.agents.client import Client
from palaestra.types import Action, BoxSpace, DiscreteSpace, EnvSpec, EpisodeStep, Observation


def _box(space: BoxSpace) -> gymnasium.spaces.Box:
    dtype = np.dtype(space.dtype)
    size = int(np.prod(space.shape, dtype=np.int64))
    low = np.array(space.low, dtype=np.float64).reshape(space.shape) if len(space.low) == size else -np.inf
    high = np.array(space.high, dtype=np.float64).reshape(space.shape) if len(space.high) == size else np.inf
    return gymnasium.spaces.Box(low=low, high=high, shape=space.shape, dtype=dtype)  # type: ignore[arg-type]


def _spaces(spec: EnvSpec) -> tuple[dict[str, gymnasium.Space[Any]], dict[str, gymnasium.Space[Any]]]:
    """One observation and one action space object per agent, built once (PettingZoo requires identity)."""
    if not isinstance(spec.observation_space, BoxSpace) or not isinstance(spec.action_space, DiscreteSpace):
        raise ValueError(f"{spec.id} is not a tensor game (needs Box observations and Discrete actions)")
    n = spec.action_space.n
    observation_spaces: dict[str, gymnasium.Space[Any]] = {}
    action_spaces: dict[str, gymnasium.Space[Any]] = {}
    for agent in spec.agents:
        box = _box(spec.observation_space)
        if "action_mask" in spec.tags:
            mask = gymnasium.spaces.Box(low=0, high=1, shape=(n,), dtype=np.int8)
            observation_spaces[agent] = gymnasium.spaces.Dict({"observation": box, "action_mask": mask})
        else:
            observation_spaces[agent] = box
        action_spaces[agent] = gymnasium.spaces.Discrete(n, start=spec.action_space.start)
    return observation_spaces, action_spaces


class _Remote:
    """What both views share: the client, the spec, and the episode."""

    def _connect(
        self,
        target: str | Client,
        env_id: str,
        options: Mapping[str, Any] | None,
        client_args: Mapping[str, Any],
    ) -> None:
        """`client_args` go to `Client` when `target` is an address: token, tls_root_cert, timeout_s..."""
        self._own_client = isinstance(target, str)
        self.client = Client(target, **client_args) if isinstance(target, str) else target
        self.env_id = env_id
        self.options = dict(options or {})
        self.env_spec = self.client.describe(env_id)
        self._masked = "action_mask" in self.env_spec.tags
        self.observation_spaces, self.action_spaces = _spaces(self.env_spec)
        self.episode_id: str | None = None

    def _open(self, seed: int | None, options: Mapping[str, Any] | None) -> EpisodeStep:
        self._close_episode()
        step = self.client.open(self.env_id, seed=seed, options={**self.options, **(options or {})})[0]
        self.episode_id = step.episode_id
        return step

    def _convert(self, observation: Observation) -> Any:
        tensor = observation.tensor
        if not self._masked:
            return tensor
        mask = observation.action_mask
        if mask is None:
            mask = np.zeros(self.env_spec.action_space.n, dtype=np.int8)  # type: ignore[union-attr]
        return {"observation": tensor, "action_mask": mask.astype(np.int8, copy=False)}

    def _close_episode(self) -> None:
        if self.episode_id is not None:
            self.client.close(self.episode_id)
            self.episode_id = None

    def _shutdown(self) -> None:
        self._close_episode()
        if self._own_client:
            self.client.close_client()
            self._own_client = False


class RemoteAECEnv(_Remote, AECEnv):  # type: ignore[misc]
    """A served turn-based game as a PettingZoo AEC environment."""

    metadata = {"render_modes": [], "is_parallelizable": False}

    def __init__(
        self,
        target: str | Client,
        env_id: str,
        options: Mapping[str, Any] | None = None,
        **client_args: Any,
    ) -> None:
        AECEnv.__init__(self)
        self._connect(target, env_id, options, client_args)
        self.metadata = {**self.metadata, "name": env_id}
        self.possible_agents = list(self.env_spec.agents)
        self.agents: list[str] = []
        self._observations: dict[str, Any] = {}

    def observation_space(self, agent: str) -> gymnasium.Space[Any]:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.Space[Any]:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        first = self._open(seed, options)
        self.agents = [a for a in self.possible_agents if a in first.agents] or self.possible_agents[:]
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos: dict[str, dict[str, Any]] = {a: {} for a in self.agents}
        self._observations = {}
        self._absorb(first)
        self.agent_selection = first.next_agent or self.agents[0]

    def observe(self, agent: str) -> Any:
        return self._observations.get(agent)

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        assert self.episode_id is not None, "reset() first"
        self._cumulative_rewards[agent] = 0.0
        result = self.client.step(self.episode_id, {agent: Action(discrete=int(action))})
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._absorb(result)
        if result.next_agent:
            self.agent_selection = result.next_agent
        else:  # game over: PettingZoo then visits every seat once more, in seat order
            self.agent_selection = self.agents[(self.agents.index(agent) + 1) % len(self.agents)]
        self._accumulate_rewards()

    def _absorb(self, step: EpisodeStep) -> None:
        if step.infra_failure is not None:
            raise RuntimeError(
                f"infrastructure failure: {step.infra_failure.source}: {step.infra_failure.message}"
            )
        for agent, result in step.agents.items():
            if agent not in self.rewards:
                continue
            self._observations[agent] = self._convert(result.observation)
            self.rewards[agent] = float(result.scalar_reward)
            self.terminations[agent] = bool(result.terminated)
            self.truncations[agent] = bool(result.truncated)
            self.infos[agent] = dict(result.info)

    def close(self) -> None:
        self._shutdown()


class RemoteParallelEnv(_Remote, ParallelEnv):  # type: ignore[misc]
    """A served simultaneous-move game as a PettingZoo parallel environment."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        target: str | Client,
        env_id: str,
        options: Mapping[str, Any] | None = None,
        **client_args: Any,
    ) -> None:
        self._connect(target, env_id, options, client_args)
        self.metadata = {**self.metadata, "name": env_id}
        self.possible_agents = list(self.env_spec.agents)
        self.agents: list[str] = []

    def observation_space(self, agent: str) -> gymnasium.Space[Any]:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.Space[Any]:
        return self.action_spaces[agent]

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        first = self._open(seed, options)
        self.agents = self.possible_agents[:]
        observations = {a: self._convert(r.observation) for a, r in first.agents.items()}
        return observations, {a: dict(first.agents[a].info) if a in first.agents else {} for a in self.agents}

    def step(self, actions: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
        assert self.episode_id is not None, "reset() first"
        result = self.client.step(self.episode_id, {a: Action(discrete=int(v)) for a, v in actions.items()})
        if result.infra_failure is not None:
            raise RuntimeError(
                f"infrastructure failure: {result.infra_failure.source}: {result.infra_failure.message}"
            )
        live = [a for a in self.agents if a in actions]
        observations = {a: self._convert(result.agents[a].observation) for a in live if a in result.agents}
        rewards = {a: float(result.agents[a].scalar_reward) if a in result.agents else 0.0 for a in live}
        terminations = {a: bool(result.agents[a].terminated) if a in result.agents else False for a in live}
        truncations = {a: bool(result.agents[a].truncated) if a in result.agents else False for a in live}
        infos = {a: dict(result.agents[a].info) if a in result.agents else {} for a in live}
        self.agents = [a for a in live if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos

    def close(self) -> None:
        self._shutdown()
