"""An in-process stand-in for the gRPC client: runs environment objects directly, no server.

Same three calls the rollout engine uses (`open`, `step_many`, `close`), same result types. Useful to
debug a trainer against an environment class before serving it, and for unit tests of the trainer's own
logic; end-to-end tests go through the real server.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from palaestra.env import AsyncEnv, Env, EnvContext, InfraError, InvalidAction
from palaestra.types import DEFAULT_AGENT, Action, EpisodeStep, EpisodeSummary, InfraFailure, StepResult

EnvFactory = Callable[[EnvContext], Env | AsyncEnv]


class InProcessClient:
    def __init__(self, factories: Mapping[str, EnvFactory]) -> None:
        self.factories = dict(factories)
        self._episodes: dict[str, tuple[str, Env | AsyncEnv, int]] = {}
        self._ids = itertools.count()

    async def open(
        self,
        env_id: str,
        *,
        seed: int | None = None,
        options: Mapping[str, Any] | None = None,
        task: int | str | None = None,
        count: int = 1,
    ) -> list[EpisodeStep]:
        steps = []
        for _ in range(count):
            episode_id = f"local-{next(self._ids)}"
            context = EnvContext(env_id=env_id, episode_id=episode_id, options=dict(options or {}), task=task)
            env = self.factories[env_id](context)
            self._episodes[episode_id] = (env_id, env, 0)
            steps.append(await self._call(episode_id, env, lambda e: e.reset(seed, options), 0))
        return steps

    async def step_many(
        self, actions: Mapping[str, Action | Mapping[str, Action]], *, raise_errors: bool = True
    ) -> dict[str, EpisodeStep | Exception]:
        out: dict[str, EpisodeStep | Exception] = {}
        for episode_id, action in actions.items():
            env_id, env, index = self._episodes[episode_id]
            per_agent = {DEFAULT_AGENT: action} if isinstance(action, Action) else dict(action)
            self._episodes[episode_id] = (env_id, env, index + 1)
            try:
                out[episode_id] = await self._call(
                    episode_id, env, partial(_step, actions=per_agent), index + 1
                )
            except InvalidAction as refused:
                if raise_errors:
                    raise
                out[episode_id] = refused
        return out

    async def close(self, episode_ids: Sequence[str]) -> list[EpisodeSummary]:
        summaries = []
        for episode_id in episode_ids:
            env_id, env, index = self._episodes.pop(episode_id)
            closing = env.close()
            if closing is not None:
                await closing
            summaries.append(
                EpisodeSummary(episode_id, env_id, index, [], None, False, False, 0.0, 0.0, "client")
            )
        return summaries

    async def _call(
        self, episode_id: str, env: Env | AsyncEnv, call: Callable[[Any], Any], index: int
    ) -> EpisodeStep:
        try:
            result = call(env)
            if not isinstance(result, StepResult):
                result = await result
        except InfraError as error:
            failure = InfraFailure(error.source, error.message)
            return EpisodeStep(episode_id, {}, done=True, infra_failure=failure, step_index=index)
        return EpisodeStep(
            episode_id,
            result.agents,
            next_agent=result.next_agent,
            done=result.done,
            infra_failure=result.infra_failure,
            step_index=index,
        )


def _step(env: Env | AsyncEnv, actions: Mapping[str, Action]) -> Any:
    return env.step(actions)
