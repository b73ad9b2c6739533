"""Vectors: N episodes of one tensor environment stepped as columns, one environment call per message.

A client opens a vector (`VectorOpenRequest`) of an environment whose plugin registered a
`VectorizedFactory`, or of a single-agent tensor environment without one (then N episodes of its plain
factory, server/episode_vector.py); every `VectorStepRequest` then carries one packed tensor of actions
and is answered by stacked observations and reward/terminated/truncated arrays (`VectorResult`): no
per-episode messages, dataclasses or checks on the way. Autoreset follows Gymnasium's modes, chosen at open.

Errors (docs/protocol.md, "Vectors"): the vector is one unit. Everything is checked before the
environment runs, so a bad request fails as a whole with nothing stepped (an action row outside the
action space is INVALID_ARGUMENT naming the rows; stepping ended episodes with autoreset disabled is
FAILED_PRECONDITION); an environment that raises ends the whole vector with an infrastructure failure.
A vector holds `num_envs` episodes of its principal's quota until it is closed.

Recording: where a plugin implements `palaestra_episode_finished` (the trajectory store), every episode of
a vector is reported as a summary (return, length, how it ended) with an empty trajectory: per-row numpy
tallies cost nothing per row in Python; a step-by-step record would. An episode that terminates or is
truncated is reported when it ends; one cut short after at least one step is reported when its row is
reset by the client (close reason "reset") or the vector closes ("client", "stream_ended", "idle", ...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from palaestra import types as t
from palaestra import wire
from palaestra.env import EnvContext, EnvRegistration, InvalidAction, VectorEnv, VectorizedFactory, VectorStep
from palaestra.registry import UnknownEnvironment
from palaestra.server.episode_vector import EpisodesVector, why_not_vectorized
from palaestra.server.episodes import new_episode_id
from palaestra.server.errors import ServiceError, exhausted, invalid, not_found, precondition
from palaestra.server.validation import check_options, check_seed, describe_space
from palaestra.v1 import env_pb2

if TYPE_CHECKING:
    from palaestra.server.auth import Principal
    from palaestra.server.runtime import Runtime

log = logging.getLogger("palaestra.server")

MAX_VECTOR = 1024  # the most episodes one vector may hold (as one open's group)
AUTORESET_MODES = {
    env_pb2.AUTORESET_MODE_NEXT_STEP: "next_step",
    env_pb2.AUTORESET_MODE_SAME_STEP: "same_step",
    env_pb2.AUTORESET_MODE_DISABLED: "disabled",
}
# Session request kinds handled here: they never wait, so a stream may handle them at once.
VECTOR_KINDS = frozenset({"vector_open", "vector_reset", "vector_step", "vector_close"})


@dataclass
class Vector:
    id: str
    registration: EnvRegistration
    env: VectorEnv
    owner: str
    principal: str
    num_envs: int
    autoreset_mode: str
    steps: int = 0
    finished: int = 0  # episodes that terminated or were truncated
    infra_failure: t.InfraFailure | None = None
    last_active: float = field(default_factory=time.monotonic)
    ended: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))  # disabled autoreset
    # One call at a time (a unary client may send two at once), and close after the call in flight: waiting
    # here never blocks the event loop, even while a fallback vector's call runs in a thread.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tallies: RowTallies | None = None  # when episodes are recorded

    @property
    def spec(self) -> t.EnvSpec:
        return self.registration.spec


@dataclass
class RowTallies:
    """Each row's current episode: return, length, start; what its summary needs when it ends."""

    env_id: str
    agent: str
    info: dict[str, Any]  # how the vector was opened (the hook's `info`; `group` is the vector id)
    returns: np.ndarray
    lengths: np.ndarray
    started: np.ndarray  # time.monotonic() at the episode's reset
    resetting: np.ndarray  # next-step autoreset: the row's next step is its reset, not a move
    recorded: int = 0

    @classmethod
    def start(cls, spec: t.EnvSpec, num_envs: int, info: dict[str, Any]) -> RowTallies:
        agent = spec.agents[0] if spec.agents else "agent"
        rows = (np.zeros(num_envs), np.zeros(num_envs, np.int64), np.full(num_envs, time.monotonic()))
        return cls(spec.id, agent, info, *rows, np.zeros(num_envs, np.bool_))

    def restart(self, rows: np.ndarray | slice) -> None:
        self.returns[rows], self.lengths[rows], self.started[rows] = 0.0, 0, time.monotonic()
        self.resetting[rows] = False

    def step(self, result: VectorStep, done: np.ndarray, next_step_reset: bool) -> list[t.EpisodeSummary]:
        """Add a step; the summaries of the episodes it ended (their rows start again)."""
        if next_step_reset:  # rows that ended last step were only reset by this one
            moved = ~self.resetting
            self.started[self.resetting] = time.monotonic()
            self.returns[moved] += result.rewards[moved]
            self.lengths[moved] += 1
            ended = np.flatnonzero(done & moved)
        else:
            self.returns += result.rewards
            self.lengths += 1
            ended = np.flatnonzero(done)
        summaries = [self._ended(int(row), result) for row in ended]
        self.restart(ended)
        if next_step_reset:
            self.resetting = done.copy()
        return summaries

    def cut_short(self, rows: np.ndarray | slice, reason: str) -> list[t.EpisodeSummary]:
        """The summaries of the episodes in `rows` that took a step and had not ended: they end here
        (a reset of their rows, or the vector closing), neither terminated nor truncated."""
        taken = np.zeros(len(self.lengths), np.bool_)
        taken[rows] = True
        return [self._summary(int(row), reason) for row in np.flatnonzero(taken & (self.lengths > 0))]

    def _ended(self, row: int, result: VectorStep) -> t.EpisodeSummary:
        if result.terminated[row]:
            return self._summary(row, "terminated", terminated=True)
        return self._summary(row, "truncated", truncated=True)

    def _summary(
        self, row: int, reason: str, terminated: bool = False, truncated: bool = False
    ) -> t.EpisodeSummary:
        self.recorded += 1
        return t.EpisodeSummary(
            episode_id=f"{self.info['group']}/{row}/{self.recorded}",
            env_id=self.env_id,
            steps=int(self.lengths[row]),
            agents=[t.AgentSummary(self.agent, float(self.returns[row]), [])],
            infra_failure=None,
            terminated=terminated,
            truncated=truncated,
            wall_seconds=time.monotonic() - float(self.started[row]),
            env_seconds=0.0,  # not timed per row: the vector's steps are timed as a whole
            close_reason=reason,
        )


class VectorTable:
    """The open vectors; their episodes count against the same quotas as single episodes."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._vectors: dict[str, Vector] = {}

    def __len__(self) -> int:
        return len(self._vectors)

    def _get(self, vector_id: str, owner: str) -> Vector:
        vector = self._vectors.get(vector_id)
        if vector is None or vector.owner != owner:
            raise not_found(f"no open vector {vector_id!r} for this client (closed, reaped or never opened)")
        vector.last_active = time.monotonic()
        return vector

    # ------------------------------------------------------------ open, reset, step

    async def open(
        self, request: env_pb2.VectorOpenRequest, owner: str, principal: Principal | None = None
    ) -> env_pb2.VectorResult:
        runtime = self.runtime
        runtime.check_opening()
        try:
            registration = runtime.plugins.envs.get(request.env_id)
        except UnknownEnvironment as exc:
            raise not_found(str(exc)) from None
        factory = registration.factory
        if not isinstance(factory, VectorizedFactory) and (why := why_not_vectorized(registration.spec)):
            raise invalid(
                f"{request.env_id} cannot be stepped as a vector: {why}; step its episodes with StepRequest"
            )
        if not 1 <= request.num_envs <= MAX_VECTOR:
            raise invalid(f"num_envs must be between 1 and {MAX_VECTOR}, got {request.num_envs}")
        mode = AUTORESET_MODES.get(request.autoreset_mode)
        if mode is None:
            raise invalid(f"unknown autoreset_mode {request.autoreset_mode}; expected one of AutoresetMode")
        seed = request.seed if request.HasField("seed") else None
        check_seed(seed)
        options = check_options(registration.spec, wire.dict_from_struct(request.options))
        who = principal.name if principal is not None else owner
        count = request.num_envs
        runtime.table.reserve(who, count, max_episodes=principal.max_episodes if principal is not None else 0)
        vector_id = f"vector:{new_episode_id()}"
        context = EnvContext(
            env_id=registration.spec.id,
            episode_id=vector_id,
            config=runtime.config.plugin_config.get(registration.spec.plugin, {}),
            options=options,
            rewards=runtime.plugins.rewards,
            logger=logging.getLogger(f"palaestra.env.{registration.spec.id}"),
        )
        try:
            if isinstance(factory, VectorizedFactory):
                env: VectorEnv = factory.make_vector(context, count, mode)
            else:  # no vector step: N episodes of the plain factory (server/episode_vector.py)
                contexts = [dataclasses.replace(context, episode_id=f"{vector_id}/{i}") for i in range(count)]
                env = EpisodesVector(registration.spec, factory, contexts, mode)
        except (InvalidAction, ValueError, KeyError) as exc:
            runtime.table.release_reservation(who, count)
            raise invalid(f"cannot open a vector of {registration.spec.id}: {exc}") from None
        except Exception as exc:
            runtime.table.release_reservation(who, count)
            log.exception("vector factory of %s failed", registration.spec.id)
            raise ServiceError(
                grpc.StatusCode.INTERNAL, f"{registration.spec.id} failed to start: {exc}"
            ) from None
        vector = Vector(vector_id, registration, env, owner, who, count, mode)
        vector.ended = np.zeros(count, dtype=np.bool_)
        if runtime.record_trajectories:
            opened = {"seed": seed, "options": options, "task": None, "owner": owner, "principal": who}
            info = {**opened, "group": vector_id, "opened_at": time.time()}
            vector.tallies = RowTallies.start(registration.spec, count, info)
        self._vectors[vector_id] = vector
        runtime.metrics.episodes_opened.labels(registration.spec.id).inc(count)
        try:
            result = await self._run(vector, "reset", seed, options, None)
        except ServiceError:
            await self._discard(vector)
            raise
        # Each step's reply is as large as this one: a vector too large for one message is refused now
        # (the client would never learn its id from a refused reply).
        limit = runtime.config.max_request_bytes
        size = result.ByteSize()
        if size > limit:
            await self._discard(vector)
            raise exhausted(
                f"a vector of {count} {registration.spec.id} episodes needs {size} bytes per "
                f"reply, above the server's limit of {limit} bytes; open fewer episodes per vector"
            )
        return result

    async def reset(self, request: env_pb2.VectorResetRequest, owner: str) -> env_pb2.VectorResult:
        vector = self._get(request.vector_id, owner)
        seed = request.seed if request.HasField("seed") else None
        check_seed(seed)
        options = check_options(vector.spec, wire.dict_from_struct(request.options))
        mask = None
        if request.HasField("reset_mask"):
            mask = _tensor(request.reset_mask, "reset_mask")
            if mask.dtype != np.bool_ or mask.shape != (vector.num_envs,):
                raise invalid(
                    f"reset_mask is {mask.dtype.name} {list(mask.shape)}; expected BOOL [{vector.num_envs}]"
                )
            if not mask.any():
                raise invalid("reset_mask selects no episode; expected at least one True")
        async with vector.lock:
            return await self._run(vector, "reset", seed, options, mask)

    async def step(self, request: env_pb2.VectorStepRequest, owner: str) -> env_pb2.VectorResult:
        vector = self._get(request.vector_id, owner)
        actions = _tensor(request.actions, "actions")
        check_actions(vector.spec.action_space, actions, vector.num_envs)
        async with vector.lock:
            if vector.autoreset_mode == "disabled" and vector.ended.any():
                rows = _rows(vector.ended)
                raise precondition(
                    f"episodes {rows} of vector {vector.id} have ended and autoreset is disabled; reset them "
                    "(VectorResetRequest with a reset_mask) before stepping"
                )
            return await self._run(vector, "step", actions)

    async def _run(self, vector: Vector, method: str, *args: Any) -> env_pb2.VectorResult:
        """Call the vector environment once; check and pack what it returned."""
        out = env_pb2.VectorResult(vector_id=vector.id)
        if vector.infra_failure is not None:
            raise precondition(f"vector {vector.id} ended with an infrastructure failure; close it")
        started = time.perf_counter()
        try:
            call = getattr(vector.env, method)
            if vector.env.runs_inline:
                result = call(*args)
            else:  # a fallback over episodes that run in the environment threads
                result = await asyncio.get_running_loop().run_in_executor(
                    self.runtime.table.executor, call, *args
                )
            broken = _broken(result, vector.num_envs)
        except InvalidAction as exc:
            raise invalid(f"{vector.spec.id}: {exc}") from None
        except Exception as exc:
            log.exception("vector %s (%s): environment raised in %s", vector.id, vector.spec.id, method)
            broken = f"{type(exc).__name__} in {method}: {exc}"
        elapsed = time.perf_counter() - started
        if broken is not None:
            vector.infra_failure = t.InfraFailure("environment", broken)
            out.infra_failure.source, out.infra_failure.message = "environment", broken
            self.runtime.metrics.infra_failures.labels(vector.spec.id, "environment").inc()
            vector.env.close()
            return out
        done = result.terminated | result.truncated
        if method == "step":
            vector.steps += 1
            vector.finished += int(done.sum())
            steps, latency = self.runtime.metrics.step_meters(vector.spec.id)
            steps.inc(vector.num_envs)
            latency.observe(elapsed)
            vector.ended |= done
            if vector.tallies is not None:
                self._report(vector, vector.tallies.step(result, done, vector.autoreset_mode == "next_step"))
        else:
            rows = slice(None) if args[2] is None else args[2]
            vector.ended[rows] = False
            if vector.tallies is not None:
                self._report(vector, vector.tallies.cut_short(rows, "reset"))
                vector.tallies.restart(rows)
        _pack(out, result)
        out.step_index = vector.steps
        return out

    # ------------------------------------------------------------ closing

    async def close(self, request: env_pb2.VectorCloseRequest, owner: str) -> env_pb2.VectorCloseResponse:
        vector = self._get(request.vector_id, owner)
        await self._discard(vector)
        return env_pb2.VectorCloseResponse(
            vector_id=vector.id, steps=vector.steps, episodes_finished=vector.finished
        )

    def _report(self, vector: Vector, summaries: list[t.EpisodeSummary]) -> None:
        assert vector.tallies is not None
        for summary in summaries:
            self.runtime.episode_finished(summary, [], vector.tallies.info)

    async def _discard(self, vector: Vector, reason: str = "client") -> None:
        if self._vectors.pop(vector.id, None) is None:
            return
        self.runtime.table.release_reservation(vector.principal, vector.num_envs)
        async with vector.lock:
            if vector.infra_failure is None:  # else it was closed, its episodes lost, when it failed
                if vector.tallies is not None:
                    self._report(vector, vector.tallies.cut_short(slice(None), reason))
                try:
                    vector.env.close()
                except Exception:
                    log.exception("vector %s (%s): close failed", vector.id, vector.spec.id)

    async def close_owned(self, owner: str, reason: str) -> None:
        for vector in [v for v in self._vectors.values() if v.owner == owner]:
            await self._discard(vector, reason)

    async def close_all(self, reason: str) -> None:
        for vector in list(self._vectors.values()):
            await self._discard(vector, reason)

    async def reap_idle(self, owner_prefix: str, idle_seconds: float) -> int:
        cutoff = time.monotonic() - idle_seconds
        idle = [
            v for v in self._vectors.values() if v.owner.startswith(owner_prefix) and v.last_active < cutoff
        ]
        for vector in idle:
            log.info("closing idle vector %s", vector.id)
            await self._discard(vector, "idle")
        return len(idle)


def _tensor(message: Any, name: str) -> np.ndarray:
    try:
        return wire.tensor_from_proto(message)
    except ValueError as exc:
        raise invalid(f"malformed {name} tensor: {exc}") from None


def _rows(mask: np.ndarray, limit: int = 8) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(int(i)) for i in rows[:limit])
    return f"[{shown}{', ...' if len(rows) > limit else ''}]"


def check_actions(space: t.Space, actions: np.ndarray, num_envs: int) -> None:
    """Raise INVALID_ARGUMENT, naming the rows and what was expected, unless every row of `actions`
    lies in `space` (the column form of validation.check_action, vectorised)."""
    expected = describe_space(space)
    if isinstance(space, t.DiscreteSpace):
        if actions.shape != (num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise invalid(
                f"actions are {actions.dtype.name} {list(actions.shape)}; expected an integer tensor "
                f"[{num_envs}] of {expected}"
            )
        bad = (actions < space.start) | (actions >= space.start + space.n)
    else:
        if isinstance(space, t.MultiDiscreteSpace):
            shape: tuple[int, ...] = (len(space.nvec),)
        elif isinstance(space, t.BoxSpace | t.MultiBinarySpace):
            shape = tuple(space.shape)
        else:
            raise invalid(f"vectors step tensor environments; this action space is {expected}")
        if actions.shape != (num_envs, *shape):
            raise invalid(
                f"actions have shape {list(actions.shape)}; expected [{num_envs}, ...] of {expected}"
            )
        rest = tuple(range(1, actions.ndim))
        if isinstance(space, t.BoxSpace):
            if not np.can_cast(actions.dtype, np.dtype(space.dtype)):
                raise invalid(f"actions are {actions.dtype.name}; expected {expected}")
            bad = np.asarray(~np.isfinite(actions).all(axis=rest))
            for bound, outside in ((space.low, np.less), (space.high, np.greater)):
                if bound:
                    limits = np.asarray(bound, dtype=np.float64).reshape(shape)
                    bad = bad | np.asarray(outside(actions, limits).any(axis=rest))
        elif isinstance(space, t.MultiDiscreteSpace):
            bad = np.asarray(((actions < 0) | (actions >= np.asarray(space.nvec))).any(axis=rest))
        else:
            bad = np.asarray(~((actions == 0) | (actions == 1)).all(axis=rest))
    if bad.any():
        raise invalid(
            f"the actions of episodes {_rows(bad)} are outside the action space; expected {expected}"
        )


def _broken(result: Any, num_envs: int) -> str | None:
    """What is wrong with a vector environment's result (the environment's fault), or None."""
    if not isinstance(result, VectorStep):
        return f"the vector environment returned {type(result).__name__}, not VectorStep"
    for name in ("observations", "rewards", "terminated", "truncated"):
        column = getattr(result, name)
        if not isinstance(column, np.ndarray) or column.ndim < 1 or column.shape[0] != num_envs:
            return f"VectorStep.{name} must be an array with {num_envs} rows"
    if result.infos and len(result.infos) != num_envs:
        return f"VectorStep.infos has {len(result.infos)} entries; expected 0 or {num_envs}"
    return None


def _pack(out: env_pb2.VectorResult, result: VectorStep) -> None:
    wire.tensor_to_proto(result.observations, out.observations)
    wire.tensor_to_proto(np.asarray(result.rewards, dtype=np.float64), out.rewards)
    wire.tensor_to_proto(np.asarray(result.terminated, dtype=np.bool_), out.terminated)
    wire.tensor_to_proto(np.asarray(result.truncated, dtype=np.bool_), out.truncated)
    for info in result.infos:
        out.infos.add().CopyFrom(wire.struct_from_dict(info))
    if result.final_mask is not None and result.final_observations is not None:
        wire.tensor_to_proto(np.asarray(result.final_mask, dtype=np.bool_), out.final_mask)
        wire.tensor_to_proto(result.final_observations, out.final_observations)
        for info in result.final_infos:
            out.final_infos.add().CopyFrom(wire.struct_from_dict(info))
