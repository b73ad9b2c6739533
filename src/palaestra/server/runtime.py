"""The server's core: opening, resetting, stepping and closing episodes, whatever the transport.

Both the Session stream and the unary mirror call these methods; they take and return protobuf
messages and raise `ServiceError` for whole-request failures. Failures of one episode inside a batch
are reported in that episode's `EpisodeResult.error` so the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from palaestra import types as t
from palaestra import wire
from palaestra.env import EnvContext, InvalidAction
from palaestra.llm import endpoints_from_config
from palaestra.pluginmanager import Plugins
from palaestra.registry import EnvUnavailable, UnknownEnvironment
from palaestra.server.auth import Principal
from palaestra.server.columnar import VectorTable
from palaestra.server.config import ServerConfig
from palaestra.server.episodes import Episode, EpisodeTable, new_episode_id
from palaestra.server.errors import ServiceError, invalid, not_found, precondition, unavailable
from palaestra.server.metrics import Metrics
from palaestra.server.validation import check_options, check_seed
from palaestra.v1 import env_pb2, types_pb2

log = logging.getLogger("palaestra.server")

MAX_GROUP = 1024  # the most episodes one open request may ask for


class Runtime:
    def __init__(self, config: ServerConfig, plugins: Plugins, sandboxes: Any = None) -> None:
        self.config = config
        self.plugins = plugins
        self.sandboxes = sandboxes
        self.metrics = Metrics()
        self.table = EpisodeTable(config.max_episodes, config.max_episodes_per_client, config.env_threads)
        self.vectors = VectorTable(self)  # columnar batches (server/columnar.py)
        self.draining = False  # the server is stopping: no new episodes
        # Drained by an operator (`palaestra cluster drain`): no new episodes; the open ones go on to their
        # end and health stays SERVING (docs/deployment.md).
        self.drained = False
        self.llm_endpoints = endpoints_from_config(config.llm)  # [llm.NAME]: what options may name
        # Recording each step costs about as much as a small env step: skip it when nobody listens.
        self.record_trajectories = bool(plugins.hook.palaestra_episode_finished.get_hookimpls())

    # ------------------------------------------------------------ open

    def check_opening(self) -> None:
        """Refuse new episodes (and vectors) while stopping or drained: UNAVAILABLE, so that the client opens
        them on another replica; requests about open episodes go on."""
        if self.draining:
            raise unavailable("the server is shutting down and opens no new episodes")
        if self.drained:
            raise unavailable("replica draining: open episodes on another replica")

    async def open(
        self, request: env_pb2.OpenRequest, owner: str, principal: Principal | None = None
    ) -> env_pb2.OpenResponse:
        """Open episodes for `owner` (the stream or unary caller that may use them), counted against
        `principal`'s quotas (default: the owner, with the server's per-client limits)."""
        self.check_opening()
        try:
            registration = self.plugins.envs.get(request.env_id)
        except UnknownEnvironment as exc:
            raise not_found(str(exc)) from None
        except EnvUnavailable as exc:
            raise precondition(str(exc)) from None
        count = request.count or 1
        if not 1 <= count <= MAX_GROUP:
            raise invalid(f"count must be between 1 and {MAX_GROUP}, got {count}")
        seed = request.seed if request.HasField("seed") else None
        check_seed(seed)
        options = check_options(registration.spec, wire.dict_from_struct(request.options))
        self._check_isolation(registration.spec)
        task = _task_selector(request.task)
        who = principal.name if principal is not None else owner
        sandboxed = bool(registration.spec.sandbox_profiles)
        self.table.reserve(
            who,
            count,
            max_episodes=principal.max_episodes if principal is not None else 0,
            sandboxed=sandboxed,
            max_sandboxes=principal.max_sandboxes if principal is not None else 0,
        )
        opened: list[Episode] = []
        resets: list[asyncio.Future[t.StepResult]] = []
        response = env_pb2.OpenResponse()
        # What the episode-finished hook reports besides the trajectory; `group` joins one open's episodes.
        info = {"seed": seed, "options": options, "task": task, "owner": owner, "principal": who}
        info["group"] = new_episode_id()
        try:
            for index in range(count):
                if index % 16 == 15:
                    await asyncio.sleep(0)  # a large open yields, so other streams keep moving
                episode_id = new_episode_id()
                context = EnvContext(
                    env_id=registration.spec.id,
                    episode_id=episode_id,
                    config=self.config.plugin_config.get(registration.spec.plugin, {}),
                    options=options,
                    task=task,
                    sandboxes=self.sandboxes,
                    rewards=self.plugins.rewards,
                    llm=self.llm_endpoints,
                    logger=logging.getLogger(f"palaestra.env.{registration.spec.id}"),
                )
                env = _build_env(registration.factory, context)
                opened.append(
                    self.table.add(
                        registration, env, owner, episode_id, self.record_trajectories, who, sandboxed
                    )
                )
                opened[-1].info = {**info, "opened_at": time.time()}
                opened[-1].report = self.episode_finished
            # Resets start 16 at a time with a yield between: started all at once, a large group's
            # resets would run back to back in one loop turn and stall every other stream for seconds.
            for index, episode in enumerate(opened):
                resets.append(asyncio.ensure_future(episode.reset(seed, options)))
                if index % 16 == 15:
                    await asyncio.sleep(0)
            results = await asyncio.gather(*resets)
        except BaseException:
            for pending in resets:
                pending.cancel()
            self.table.release_reservation(who, count - len(opened), sandboxed)
            for episode in opened:
                await self._discard(episode)
            raise
        for index, (episode, result) in enumerate(zip(opened, results, strict=True)):
            if index % 16 == 15:
                await asyncio.sleep(0)
            self.metrics.episodes_opened.labels(episode.spec.id).inc()
            if self._fill_now(response.episodes.add(), episode, result):
                await episode.close_env()  # an infrastructure failure: free its sandboxes now
        self.metrics.episodes_open.set(len(self.table))
        return response

    async def _discard(self, episode: Episode) -> None:
        self.table.pop(episode.id)
        await episode.close_env()

    # ------------------------------------------------------------ reset and step

    def runs_inline(self, request: env_pb2.SessionRequest, owner: str) -> bool:
        """True for a reset or step whose episodes all belong to this owner and run inline (synchronous,
        microseconds): such a request never waits on anything, so a transport may handle it at once."""
        kind = request.WhichOneof("request")
        if kind == "step":
            episode_ids = [item.episode_id for item in request.step.episodes]
        elif kind == "reset":
            episode_ids = [item.episode_id for item in request.reset.episodes]
        else:
            return False
        for episode_id in episode_ids:
            try:
                inline = self.table.get(episode_id, owner).inline
            except ServiceError:
                return False  # the normal path reports it
            if not inline:
                return False
        return bool(episode_ids)

    async def reset(
        self, request: env_pb2.ResetRequest, owner: str, response: env_pb2.ResetResponse | None = None
    ) -> env_pb2.ResetResponse:
        """Reset the request's episodes; the results go into `response` (a new one if None: a transport
        that passes the field of its reply saves copying every result into it)."""
        response = env_pb2.ResetResponse() if response is None else response
        calls = []
        for item in request.episodes:
            out = response.episodes.add(episode_id=item.episode_id)
            seed = item.seed if item.HasField("seed") else None
            options = wire.dict_from_struct(item.options)
            calls.append(
                (
                    out,
                    item.episode_id,
                    lambda e, s=seed, o=options: _checked_reset(e, s, o),
                    lambda e, s=seed, o=options: _reset_now(e, s, o),
                )
            )
        await self._run_batch(calls, owner)
        return response

    async def step(
        self, request: env_pb2.StepRequest, owner: str, response: env_pb2.StepResponse | None = None
    ) -> env_pb2.StepResponse:
        """Step the request's episodes; the results go into `response` (as in `reset`)."""
        response = env_pb2.StepResponse() if response is None else response
        calls = []
        for item in request.episodes:
            out = response.episodes.add(episode_id=item.episode_id)
            try:
                actions = {a.agent: wire.action_from_proto(a.action) for a in item.actions}
            except ValueError as exc:  # e.g. a tensor whose bytes do not match its shape
                out.error.CopyFrom(invalid(f"malformed action: {exc}").to_status())
                continue
            calls.append(
                (out, item.episode_id, lambda e, a=actions: e.step(a), lambda e, a=actions: e.step_now(a))
            )
        await self._run_batch(calls, owner)
        return response

    async def _run_batch(self, calls: list[Any], owner: str) -> None:
        """Run one call per episode: (out, episode id, coroutine function, synchronous function). Inline
        environments run one after another, synchronously while nothing else holds the episode (no
        coroutine, lock or task: the batched hot path); the others run concurrently so one slow episode
        does not hold up the batch."""
        concurrent: list[tuple[types_pb2.EpisodeResult, Episode, Coroutine[Any, Any, t.StepResult]]] = []
        for out, episode_id, call, now in calls:
            try:
                episode = self.table.get(episode_id, owner)
            except ServiceError as exc:
                out.error.CopyFrom(exc.to_status())
                continue
            if episode.can_run_now():
                if self._run_now(out, episode, now):
                    await episode.close_env()  # free sandboxes now; the summary stays until the client closes
            elif episode.env.runs_inline or len(calls) == 1:
                await self._run_one(out, episode, call(episode))
            else:
                concurrent.append((out, episode, call(episode)))
        if concurrent:
            await asyncio.gather(*(self._run_one(out, episode, coro) for out, episode, coro in concurrent))

    def _run_now(
        self, out: types_pb2.EpisodeResult, episode: Episode, call: Callable[[Episode], t.StepResult]
    ) -> bool:
        """`_run_one`, synchronously; True when the episode's environment must now be closed."""
        before = episode.env_seconds
        try:
            outcome: t.StepResult | ServiceError = call(episode)
        except ServiceError as exc:
            outcome = exc
        return self._finish(out, episode, before, outcome)

    async def _run_one(
        self, out: types_pb2.EpisodeResult, episode: Episode, call: Coroutine[Any, Any, t.StepResult]
    ) -> None:
        before = episode.env_seconds
        try:
            outcome: t.StepResult | ServiceError = await call
        except ServiceError as exc:
            outcome = exc
        if self._finish(out, episode, before, outcome):
            await episode.close_env()  # free sandboxes now; the summary stays until the client closes

    def _finish(
        self,
        out: types_pb2.EpisodeResult,
        episode: Episode,
        before: float,
        outcome: t.StepResult | ServiceError,
    ) -> bool:
        """Put one call's outcome in `out` (the result, or the error that refused it) and count it; True
        when the episode's environment must now be closed. `before`: its env_seconds before the call."""
        if isinstance(outcome, ServiceError):
            self.metrics.errors.labels(outcome.code.name).inc()
            out.error.CopyFrom(outcome.to_status())
            return False
        steps, latency = self.metrics.step_meters(episode.spec.id)
        steps.inc()
        latency.observe(episode.env_seconds - before)
        return self._fill_now(out, episode, outcome)

    def _fill_now(self, out: types_pb2.EpisodeResult, episode: Episode, result: t.StepResult) -> bool:
        """Fill in an episode's result; True after an infrastructure failure (close its environment)."""
        out.episode_id = episode.id
        for agent, agent_result in result.agents.items():
            wire.agent_result_to_proto(agent, agent_result, out.agents.add())
        out.next_agent = result.next_agent
        out.done = episode.finished
        out.step_index = episode.steps
        if result.infra_failure is not None:
            out.infra_failure.source = result.infra_failure.source
            out.infra_failure.message = result.infra_failure.message
            self.metrics.infra_failures.labels(episode.spec.id, result.infra_failure.source).inc()
            return True
        return False

    # ------------------------------------------------------------ catalog

    def isolation_of(self, spec: t.EnvSpec) -> str:
        """The isolation in force for an environment: the backend serving each sandbox profile it leases."""
        if not spec.sandbox_profiles:
            return "none: runs in the server process, no sandbox"
        manager = self.sandboxes
        if manager is None:
            return "unavailable: the server has no sandbox manager"
        parts = []
        for profile in spec.sandbox_profiles:
            chosen = manager.choice.get(profile)
            if chosen is None:
                why = getattr(manager, "problems", {}).get(
                    profile, "the sandbox manager has not chosen a backend"
                )
                parts.append(f"{profile}: unavailable: {why}")
                continue
            backend = manager.backends.get(chosen)
            described = getattr(backend, "describe", None)
            parts.append(f"{profile}: {described() if callable(described) else chosen}")
        return "; ".join(parts)

    def _check_isolation(self, spec: t.EnvSpec) -> None:
        """Refuse at open an environment whose sandbox profile has no backend at the configured isolation.

        The client learns it at once (FAILED_PRECONDITION), instead of every episode failing at its
        first lease; the isolation is never weakened silently ([sandbox] allow_weaker_isolation)."""
        problems: dict[str, str] = getattr(self.sandboxes, "problems", {}) if self.sandboxes else {}
        missing = [f"sandbox profile {p!r}: {problems[p]}" for p in spec.sandbox_profiles if p in problems]
        if missing:
            raise precondition(f"{spec.id} cannot be served here: " + "; ".join(missing))

    def catalog_spec(self, spec: t.EnvSpec) -> t.EnvSpec:
        """The spec as the catalog shows it: with the isolation in force."""
        return dataclasses.replace(spec, isolation=self.isolation_of(spec))

    # ------------------------------------------------------------ close

    async def close(
        self, request: env_pb2.CloseRequest, owner: str, reason: str = "client"
    ) -> env_pb2.CloseResponse:
        response = env_pb2.CloseResponse()
        missing = []
        for episode_id in request.episode_ids:
            try:
                self.table.get(episode_id, owner)
            except ServiceError:
                missing.append(episode_id)
                continue
            summary = await self.close_episode(episode_id, reason)
            if summary is not None:
                wire.summary_to_proto(summary, response.summaries.add())
        if missing and not response.summaries:
            raise not_found(f"no open episodes {missing} for this client")
        return response

    async def close_episode(self, episode_id: str, reason: str) -> t.EpisodeSummary | None:
        episode = self.table.pop(episode_id)
        if episode is None:
            return None
        async with episode.lock:
            await episode.close_env()
        summary = episode.summary(reason)
        self.metrics.episodes_open.set(len(self.table))
        self.episode_finished(summary, episode.trajectory, episode.info)
        return summary

    async def close_owned(self, owner: str, reason: str) -> None:
        for episode_id in self.table.owned_by(owner):
            await self.close_episode(episode_id, reason)
        await self.vectors.close_owned(owner, reason)

    async def close_all(self, reason: str) -> None:
        for episode_id in self.table.all_ids():
            await self.close_episode(episode_id, reason)
        await self.vectors.close_all(reason)

    def episode_finished(
        self, summary: t.EpisodeSummary, trajectory: list[dict[str, Any]], info: dict[str, Any]
    ) -> None:
        try:
            self.plugins.hook.palaestra_episode_finished(summary=summary, trajectory=trajectory, info=info)
        except Exception:
            log.exception("a palaestra_episode_finished hook failed for episode %s", summary.episode_id)

    # ------------------------------------------------------------ reaping

    async def reap_idle(self) -> int:
        """Close unary-opened episodes idle for longer than the configured timeout."""
        idle = self.table.idle("unary:", self.config.idle_timeout_s)
        for episode_id in idle:
            log.info("closing idle episode %s", episode_id)
            await self.close_episode(episode_id, "idle")
        return len(idle) + await self.vectors.reap_idle("unary:", self.config.idle_timeout_s)


async def _checked_reset(episode: Episode, seed: int | None, options: dict[str, Any]) -> t.StepResult:
    check_seed(seed)
    return await episode.reset(seed, check_options(episode.spec, options))


def _reset_now(episode: Episode, seed: int | None, options: dict[str, Any]) -> t.StepResult:
    check_seed(seed)
    return episode.reset_now(seed, check_options(episode.spec, options))


def _task_selector(selector: env_pb2.TaskSelector) -> int | str | None:
    which = selector.WhichOneof("selector")
    if which == "index":
        return selector.index
    if which == "id":
        return selector.id
    return None


def _build_env(factory: Any, context: EnvContext) -> Any:
    """Call the plugin's factory; bad options are the client's fault, anything else the plugin's."""
    try:
        env = factory(context)
    except (InvalidAction, ValueError, KeyError) as exc:
        raise invalid(f"cannot open {context.env_id}: {exc}") from None
    except Exception as exc:
        log.exception("factory of %s failed", context.env_id)
        raise ServiceError(grpc.StatusCode.INTERNAL, f"{context.env_id} failed to start: {exc}") from None
    if inspect.iscoroutine(env):
        env.close()
        raise ServiceError(
            grpc.StatusCode.INTERNAL, f"the factory of {context.env_id} must not be a coroutine"
        )
    return env
