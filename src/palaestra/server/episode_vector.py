"""The per-episode fallback of the columnar path: one `VectorEnv` over N single-episode environments.

A single-agent tensor environment whose plugin registers no vector step (a plain factory) is still served
as a vector: the server builds N episodes with the plugin's factory, and each vector call resets or steps
them one after another, as Gymnasium's `SyncVectorEnv` does locally. The client's side is the same as for
a native vector: one `VectorStepRequest` per step, one reply of stacked columns (docs/protocol.md,
"Vectors"). What the per-episode path checks still holds: every result keeps the reward contract and a
declared `max_episode_steps` is reported as truncation. An episode may still refuse an action inside the
action space, or reset options (InvalidAction, INVALID_ARGUMENT naming the row): refused before any row
ran, the vector goes on; refused after, the rows that ran moved where the client cannot see them, so the
vector refuses every later call (close it).

Served this way: single-agent environments with a Box or Discrete observation space whose episodes are
synchronous (`Env`) and lease no sandboxes. When the episodes do not run inline, the vector's calls run in
the server's environment threads (`runs_inline` below), one at a time (the server holds each vector's
lock around its calls and its close). Chat and text episodes keep the per-episode form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from palaestra import types as t
from palaestra.env import AsyncEnv, EnvContext, EnvFactory, InvalidAction, VectorEnv, VectorStep
from palaestra.server.episodes import enforce_step_limit
from palaestra.server.validation import check_result


def why_not_vectorized(spec: t.EnvSpec) -> str | None:
    """Why `spec`'s episodes cannot be served as a vector by the fallback, or None when they can."""
    if len(spec.agents) != 1:
        return f"it has {len(spec.agents)} agents (vectors serve single-agent environments)"
    if not isinstance(spec.observation_space, t.BoxSpace | t.DiscreteSpace):
        return "its observations are not tensors (chat and text episodes keep the per-episode form)"
    if not isinstance(
        spec.action_space, t.DiscreteSpace | t.BoxSpace | t.MultiDiscreteSpace | t.MultiBinarySpace
    ):
        return "its actions are not tensors (chat and text episodes keep the per-episode form)"
    if spec.sandbox_profiles:
        return "its episodes lease sandboxes"
    return None


class EpisodesVector(VectorEnv):
    """N episodes of a plain factory, reset and stepped row by row in one vector call."""

    def __init__(
        self, spec: t.EnvSpec, factory: EnvFactory, contexts: list[EnvContext], autoreset_mode: str
    ) -> None:
        self.spec = spec
        self.agent = spec.agents[0]
        self.num_envs = len(contexts)
        self.autoreset_mode = autoreset_mode
        self.envs: list[Any] = []
        try:
            for context in contexts:
                env = factory(context)
                if isinstance(env, AsyncEnv):  # never started; its close is a coroutine, not ours to run
                    raise ValueError(
                        f"{spec.id} episodes are asynchronous (AsyncEnv) and its plugin registers no vector "
                        "step; step its episodes with StepRequest"
                    )
                self.envs.append(env)
        except BaseException:
            for env in self.envs:
                env.close()
            raise
        self.runs_inline = all(getattr(env, "runs_inline", False) for env in self.envs)
        space = spec.observation_space
        self.obs_dtype = np.dtype(space.dtype) if isinstance(space, t.BoxSpace) else np.dtype(np.int64)
        self.obs_shape = tuple(space.shape) if isinstance(space, t.BoxSpace) else ()
        self.discrete_actions = isinstance(spec.action_space, t.DiscreteSpace)
        self.observations = np.zeros((self.num_envs, *self.obs_shape), dtype=self.obs_dtype)
        self.steps = np.zeros(self.num_envs, dtype=np.int64)
        self.to_reset = np.zeros(self.num_envs, dtype=np.bool_)  # next-step autoreset: reset at next step
        self.calls = 0  # environment calls made (a refusal after some means rows have moved)
        self.refused = ""  # why the vector cannot go on, after a refusal that came too late

    def reset(
        self, seed: int | None, options: Mapping[str, Any], mask: np.ndarray | None = None
    ) -> VectorStep:
        return self._refusable(self._reset_rows, seed, options, mask)

    def step(self, actions: np.ndarray) -> VectorStep:
        return self._refusable(self._step_rows, actions)

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def _refusable(self, call: Callable[..., VectorStep], *args: Any) -> VectorStep:
        """Run a reset or step of the rows. An episode that refuses its action or reset options
        (InvalidAction: INVALID_ARGUMENT for the client) after other rows were already reset or stepped
        leaves the vector out of step with what the client saw: the vector refuses to go on."""
        if self.refused:
            raise InvalidAction(self.refused)
        before = self.calls
        try:
            return call(*args)
        except InvalidAction as exc:
            if self.calls == before:
                raise  # nothing was reset or stepped: the vector goes on
            self.refused = (
                f"{exc}; the rows before it had already been run, so this vector cannot go on: close it"
            )
            raise InvalidAction(self.refused) from None

    # ------------------------------------------------------------ the rows

    def _reset_rows(
        self, seed: int | None, options: Mapping[str, Any], mask: np.ndarray | None
    ) -> VectorStep:
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in range(self.num_envs):
            if mask is None or mask[i]:
                infos[i] = self._reset(i, None if seed is None else seed + i, options)
                self.to_reset[i] = False
        zeros = np.zeros(self.num_envs, dtype=np.bool_)
        return VectorStep(self.observations.copy(), np.zeros(self.num_envs), zeros, zeros.copy(), infos)

    def _step_rows(self, actions: np.ndarray) -> VectorStep:
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        final_mask = np.zeros(self.num_envs, dtype=np.bool_)
        final_observations = np.zeros_like(self.observations)
        final_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in range(self.num_envs):
            if self.to_reset[i]:  # next-step autoreset: this step's action is ignored
                infos[i] = self._reset(i, None, {})
                self.to_reset[i] = False
                continue
            try:
                result = self.envs[i].step({self.agent: self._action(actions[i])})
            except InvalidAction as exc:
                raise InvalidAction(f"episode {i}: {exc}") from None
            self.calls += 1
            agent = self._checked(result, i, "step")
            self.steps[i] += 1
            enforce_step_limit(self.spec, int(self.steps[i]), result)
            self.observations[i] = self._observation(agent, i)
            rewards[i] = agent.scalar_reward
            terminated[i], truncated[i] = agent.terminated, agent.truncated
            infos[i] = dict(agent.info)
            if not (agent.terminated or agent.truncated):
                continue
            if self.autoreset_mode == "same_step":
                final_mask[i] = True
                final_observations[i], final_infos[i] = self.observations[i], infos[i]
                infos[i] = self._reset(i, None, {})
            elif self.autoreset_mode == "next_step":
                self.to_reset[i] = True
        if not final_mask.any():
            return VectorStep(self.observations.copy(), rewards, terminated, truncated, infos)
        return VectorStep(
            self.observations.copy(),
            rewards,
            terminated,
            truncated,
            infos,
            final_mask,
            final_observations,
            final_infos,
        )

    def _reset(self, i: int, seed: int | None, options: Mapping[str, Any]) -> dict[str, Any]:
        try:
            result = self.envs[i].reset(seed, dict(options))
        except InvalidAction as exc:
            raise InvalidAction(f"episode {i}: {exc}") from None
        self.calls += 1
        agent = self._checked(result, i, "reset")
        self.observations[i] = self._observation(agent, i)
        self.steps[i] = 0
        return dict(agent.info)

    def _action(self, row: np.ndarray) -> t.Action:
        return t.Action(discrete=int(row)) if self.discrete_actions else t.Action(tensor=np.asarray(row))

    def _checked(self, result: Any, i: int, method: str) -> t.AgentResult:
        """The episode's result for its agent; anything else is the environment's fault (the server makes
        the whole vector an infrastructure failure)."""
        if not isinstance(result, t.StepResult):
            raise RuntimeError(f"episode {i}: {method} returned {type(result).__name__}, not StepResult")
        if result.infra_failure is not None:
            failure = result.infra_failure
            raise RuntimeError(f"episode {i}: {failure.source}: {failure.message}")
        broken = check_result(self.spec, result)
        if broken is not None:
            raise RuntimeError(f"episode {i}: {self.spec.id} broke its reward contract: {broken}")
        agent = result.agents.get(self.agent)
        if agent is None:
            raise RuntimeError(f"episode {i}: {method} returned no result for agent {self.agent!r}")
        return agent

    def _observation(self, agent: t.AgentResult, i: int) -> np.ndarray:
        tensor = agent.observation.tensor
        if tensor is None:
            raise RuntimeError(f"episode {i}: the observation carries no tensor")
        row = np.asarray(tensor, dtype=self.obs_dtype)
        if row.shape != self.obs_shape:
            raise RuntimeError(f"episode {i}: observation of shape {row.shape}; expected {self.obs_shape}")
        return row
