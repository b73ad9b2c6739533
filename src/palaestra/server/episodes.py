"""Episodes: one environment instance each, and the table that bounds and reaps them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from palaestra import types as t
from palaestra.env import AnyEnv, AsyncEnv, EnvRegistration, InfraError, InvalidAction
from palaestra.server.errors import exhausted, invalid, not_found, precondition
from palaestra.server.validation import check_action, check_result

log = logging.getLogger("palaestra.episodes")

# Set in a result's info when the server, not the environment, ended the episode at its declared step limit.
SERVER_TRUNCATION = "truncated_by_server_at_step"

# Trajectory entries kept per episode for the episode-finished hook; long games keep only the last ones.
MAX_TRAJECTORY = 10_000


@dataclass
class ComponentTally:
    kind: t.RewardKind
    total: float = 0.0
    count: int = 0
    not_ok: int = 0


def enforce_step_limit(spec: t.EnvSpec, steps: int, result: t.StepResult) -> None:
    """A declared step limit is reported as truncation, even if the environment forgot it."""
    limit = spec.max_episode_steps
    if limit and steps >= limit and not result.done:
        for agent_result in result.agents.values():
            if not agent_result.terminated:
                agent_result.truncated = True
                agent_result.info[SERVER_TRUNCATION] = limit
        if not result.agents:
            result.agents[spec.agents[0]] = t.AgentResult(truncated=True, info={SERVER_TRUNCATION: limit})


@dataclass
class Episode:
    id: str
    registration: EnvRegistration
    env: AnyEnv
    owner: str  # the stream or unary client that may use this episode
    executor: ThreadPoolExecutor
    principal: str = ""  # the authenticated caller (or connection) whose quotas the episode counts against
    sandboxed: bool = False  # the environment leases sandboxes (counts against the principal's max_sandboxes)
    opened_at: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    steps: int = 0
    next_agent: str = ""
    finished: bool = False
    terminated: bool = False
    truncated: bool = False
    infra_failure: t.InfraFailure | None = None
    env_seconds: float = 0.0
    returns: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    tallies: dict[str, dict[str, ComponentTally]] = field(default_factory=lambda: defaultdict(dict))
    recorded: list[tuple[Any, ...]] = field(default_factory=list)  # compact steps (see `trajectory`)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    env_closed: bool = False
    record_trajectory: bool = True  # off when no plugin implements palaestra_episode_finished
    info: dict[str, Any] = field(default_factory=dict)  # seed, options, group, owner: for the hook
    # The episode-finished hook (the runtime's): a reset after steps reports the episode it ends.
    report: Callable[[t.EpisodeSummary, list[dict[str, Any]], dict[str, Any]], None] | None = None
    segments: int = 0  # episodes this id ended by a reset (reported as <id>/<n>)
    segment_opened_at: float = field(default_factory=time.monotonic)
    segment_env_seconds: float = 0.0  # env_seconds when the current episode of this id began
    inline: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        # Synchronous and fast (Env.runs_inline): called on the event loop, not in the executor.
        self.inline = not isinstance(self.env, AsyncEnv) and bool(self.env.runs_inline)

    @property
    def spec(self) -> t.EnvSpec:
        return self.registration.spec

    @property
    def trajectory(self) -> list[dict[str, Any]]:
        """The recorded steps as plain dicts, as the episode-finished hook gets them (built on demand:
        an open episode keeps each step as nested tuples of strings and numbers, which the garbage
        collector stops scanning after one pass; dicts kept per step made full collections walk every
        open episode's whole trajectory, hundreds of ms at a time under batched load)."""
        return [_expand_entry(entry) for entry in self.recorded]

    # ------------------------------------------------------------ calling the environment

    async def _call(self, method: str, *args: Any) -> t.StepResult:
        """Run env.reset/env.step; an escaping exception becomes an infrastructure failure."""
        if self.inline:
            return self._call_inline(method, *args)
        fn: Callable[..., Any] = getattr(self.env, method)
        started = time.perf_counter()
        try:
            if isinstance(self.env, AsyncEnv):
                result = await fn(*args)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self.executor, fn, *args)
        except Exception as exc:
            result = self._failure(method, exc)
        finally:
            self.env_seconds += time.perf_counter() - started
        return self._checked(method, result)

    def _call_inline(self, method: str, *args: Any) -> t.StepResult:
        """`_call` for an inline environment: synchronous, on the event loop."""
        started = time.perf_counter()
        try:
            result = getattr(self.env, method)(*args)
        except Exception as exc:
            result = self._failure(method, exc)
        finally:
            self.env_seconds += time.perf_counter() - started
        return self._checked(method, result)

    def _failure(self, method: str, exc: Exception) -> t.StepResult:
        """What an exception escaping the environment means (call it from the `except` block):
        the client's invalid action, or an infrastructure failure."""
        if isinstance(exc, InvalidAction):
            raise invalid(f"{self.spec.id}: {exc}") from None
        if isinstance(exc, InfraError):
            log.error("episode %s (%s): infrastructure failure in %s: %s", self.id, self.spec.id, method, exc)
            return t.StepResult(agents={}, infra_failure=t.InfraFailure(exc.source, exc.message))
        log.exception("episode %s (%s): environment raised in %s", self.id, self.spec.id, method)
        failure = t.InfraFailure("environment", f"{type(exc).__name__} in {method}: {exc}")
        return t.StepResult(agents={}, infra_failure=failure)

    def _checked(self, method: str, result: Any) -> t.StepResult:
        if not isinstance(result, t.StepResult):
            failure = t.InfraFailure(
                "environment", f"{method} returned {type(result).__name__}, not StepResult"
            )
            result = t.StepResult(agents={}, infra_failure=failure)
        elif (broken := check_result(self.spec, result)) is not None:
            log.error("episode %s (%s) %s: reward contract broken: %s", self.id, self.spec.id, method, broken)
            failure = t.InfraFailure("environment", f"{self.spec.id} broke its reward contract: {broken}")
            result = t.StepResult(agents={}, infra_failure=failure)
        return result

    async def reset(self, seed: int | None, options: Mapping[str, Any]) -> t.StepResult:
        async with self.lock:
            self._before_reset()
            result = await self._call("reset", seed, dict(options))
            self._after_reset(result)
            return result

    async def step(self, actions: Mapping[str, t.Action]) -> t.StepResult:
        async with self.lock:
            resolved = self._before_step(actions)
            result = await self._call("step", resolved)
            self._after_step(result, resolved)
            return result

    # An inline environment whose lock is free is reset and stepped synchronously: no coroutine and no
    # lock, since nothing can interleave with synchronous code (the batched hot path, runtime.py).

    def can_run_now(self) -> bool:
        return self.inline and not self.lock.locked()

    def reset_now(self, seed: int | None, options: Mapping[str, Any]) -> t.StepResult:
        assert self.can_run_now()
        self._before_reset()
        result = self._call_inline("reset", seed, dict(options))
        self._after_reset(result)
        return result

    def step_now(self, actions: Mapping[str, t.Action]) -> t.StepResult:
        assert self.can_run_now()
        resolved = self._before_step(actions)
        result = self._call_inline("step", resolved)
        self._after_step(result, resolved)
        return result

    def _before_reset(self) -> None:
        """Refuse a reset after an infrastructure failure; else end the episode this id was playing."""
        self.last_active = time.monotonic()
        if self.infra_failure is not None:
            raise precondition(f"episode {self.id} ended with an infrastructure failure; open a new one")
        self._end_segment()

    def _end_segment(self) -> None:
        """A reset after at least one step ends the episode this id was playing: it is reported now, as
        `<id>/<n>`, with its own return, steps and trajectory (a Gymnasium wrapper resets one id again and
        again); the id itself names the episode it plays last, reported when it closes."""
        if not self.steps or not self.record_trajectory or self.report is None:
            return
        self.segments += 1
        summary = dataclasses.replace(self.summary("reset"), episode_id=f"{self.id}/{self.segments}")
        trajectory, self.recorded = self.trajectory, []
        self.report(summary, trajectory, self.info)
        self.segment_opened_at, self.segment_env_seconds = time.monotonic(), self.env_seconds
        # A new dict for the next episode: the reported one keeps its own start.
        self.info = {**self.info, "opened_at": time.time()}

    def _after_reset(self, result: t.StepResult) -> None:
        self.steps, self.finished, self.terminated, self.truncated = 0, False, False, False
        self.returns.clear()
        self.tallies.clear()
        self._record(result, actions=None)

    def _before_step(self, actions: Mapping[str, t.Action]) -> dict[str, t.Action]:
        self.last_active = time.monotonic()
        if self.finished:
            state = "with an infrastructure failure" if self.infra_failure else "(terminated or truncated)"
            raise precondition(f"episode {self.id} has ended {state}; reset it or open a new one")
        return self._resolve_actions(actions)

    def _after_step(self, result: t.StepResult, resolved: Mapping[str, t.Action]) -> None:
        self.steps += 1
        enforce_step_limit(self.spec, self.steps, result)
        self._record(result, actions=resolved)

    def _resolve_actions(self, actions: Mapping[str, t.Action]) -> dict[str, t.Action]:
        """Name the acting agent where the client left it empty, and check every action against the space."""
        spec = self.spec
        resolved: dict[str, t.Action] = {}
        for agent, action in actions.items():
            if not agent:
                if spec.kind is t.EnvKind.SIMULTANEOUS:
                    raise invalid(
                        f"{spec.id} is simultaneous: name the agent of each action ({', '.join(spec.agents)})"
                    )
                agent = self.next_agent or spec.agents[0]
            if agent not in spec.agents:
                raise invalid(f"{spec.id} has no agent {agent!r}; its agents are {', '.join(spec.agents)}")
            if spec.kind is t.EnvKind.TURN_BASED and self.next_agent and agent != self.next_agent:
                raise invalid(f"it is {self.next_agent}'s turn in episode {self.id}, not {agent}'s")
            check_action(spec.action_space, action)
            resolved[agent] = action
        if not resolved:
            raise invalid(f"the step carries no action; expected one for {self.next_agent or spec.agents[0]}")
        return resolved

    def _record(self, result: t.StepResult, actions: Mapping[str, t.Action] | None) -> None:
        self.next_agent = result.next_agent
        if result.infra_failure is not None:
            self.infra_failure = result.infra_failure
        for agent, agent_result in result.agents.items():
            self.returns[agent] += agent_result.scalar_reward
            self.terminated |= agent_result.terminated
            self.truncated |= agent_result.truncated
            for c in agent_result.components:
                tallies = self.tallies[agent]
                tally = tallies.get(c.name)
                if tally is None:  # (not setdefault: that would build a tally on every step)
                    tally = tallies[c.name] = ComponentTally(c.kind)
                tally.count += 1
                if c.status is t.ComponentStatus.OK:
                    tally.total += c.value
                else:
                    tally.not_ok += 1
        self.finished = result.done if result.agents or result.infra_failure else self.finished
        if self.record_trajectory and len(self.recorded) < MAX_TRAJECTORY:
            self.recorded.append(_trajectory_entry(self.steps, actions, result, self.env_seconds))

    # ------------------------------------------------------------ closing

    async def close_env(self) -> None:
        if self.env_closed:
            return
        self.env_closed = True
        try:
            if isinstance(self.env, AsyncEnv):
                await self.env.close()
            else:
                await asyncio.get_running_loop().run_in_executor(self.executor, self.env.close)
        except Exception:
            log.exception("episode %s (%s): close failed", self.id, self.spec.id)

    def summary(self, reason: str) -> t.EpisodeSummary:
        agents = sorted(set(self.returns) | set(self.tallies))
        return t.EpisodeSummary(
            episode_id=self.id,
            env_id=self.spec.id,
            steps=self.steps,
            agents=[
                t.AgentSummary(
                    agent=agent,
                    episode_return=self.returns.get(agent, 0.0),
                    components=[
                        t.ComponentTotal(name, tally.kind, tally.total, tally.count, tally.not_ok)
                        for name, tally in sorted(self.tallies.get(agent, {}).items())
                    ],
                )
                for agent in agents
            ],
            infra_failure=self.infra_failure,
            terminated=self.terminated,
            truncated=self.truncated,
            wall_seconds=time.monotonic() - self.segment_opened_at,
            env_seconds=self.env_seconds - self.segment_env_seconds,
            close_reason=reason,
        )


_KIND_NAMES = {kind: kind.name.lower() for kind in t.RewardKind}
_STATUS_NAMES = {status: status.name.lower() for status in t.ComponentStatus}


def _trajectory_entry(
    step: int, actions: Mapping[str, t.Action] | None, result: t.StepResult, env_seconds: float
) -> tuple[Any, ...]:
    """One step, compact: actions, and per agent the new messages, rewards, components and checklist
    items (tensors are left out: a recorder wants the conversation, not the frames) as nested tuples of
    strings and numbers (an agent's non-empty info stays the environment's dict); `_expand_entry` turns
    it into the hook's dict. This runs on the event loop for every step while a recorder listens.
    Inner tuples are built before outer ones (`tuple([...])`, not `tuple(generator)`), so that one
    collection finds them all untrackable."""
    agents = []
    for agent, r in result.agents.items():
        # (Each part is built only when there is something in it: a comprehension costs even when empty.)
        components = (
            tuple(
                [
                    (c.name, _KIND_NAMES[c.kind], c.value, c.weight, _STATUS_NAMES[c.status], c.detail)
                    for c in r.components
                ]
            )
            if r.components
            else ()
        )
        observation = r.observation
        messages = tuple([_message_tuple(m) for m in observation.messages]) if observation.messages else ()
        checklist = tuple([_checklist_tuple(c) for c in r.checklist]) if r.checklist else ()
        legal = tuple(observation.legal_actions) if observation.legal_actions else ()
        agents.append((agent, r.scalar_reward, components, messages, checklist, legal, r.info or None))
    summaries = tuple([(agent, _action_summary(a)) for agent, a in actions.items()]) if actions else ()
    return (
        step,
        time.time(),
        env_seconds,
        summaries,
        tuple(agents),
        result.next_agent,
        result.done,
        result.infra_failure.message if result.infra_failure else None,
    )


def _expand_entry(entry: tuple[Any, ...]) -> dict[str, Any]:
    """A compact step as plain data: per agent its rewards, components, new messages (if any), checklist
    items (if any), legal actions (if any) and info (if any)."""
    step, at, env_seconds, actions, agents, next_agent, done, infra_failure = entry
    rewards: dict[str, float] = {}
    components: dict[str, list[dict[str, Any]]] = {}
    messages: dict[str, list[dict[str, Any]]] = {}
    checklist: dict[str, list[dict[str, Any]]] = {}
    legal_actions: dict[str, list[str]] = {}
    info: dict[str, dict[str, Any]] = {}
    for agent, reward, agent_components, agent_messages, items, legal, agent_info in agents:
        rewards[agent] = reward
        components[agent] = [
            {"name": n, "kind": k, "value": v, "weight": w, "status": s, "detail": d}
            for n, k, v, w, s, d in agent_components
        ]
        if agent_messages:
            messages[agent] = [_message_dict(m) for m in agent_messages]
        if items:
            checklist[agent] = [
                {
                    "item_id": item_id,
                    "turn": turn,
                    "passed": passed,
                    "weight": weight,
                    "score": score,
                    "status": status,
                    "reason": reason,
                    "evidence": [
                        {"turn": et, "step": es, "snippet": snippet} for et, es, snippet in evidence
                    ],
                }
                for item_id, turn, passed, weight, score, status, reason, evidence in items
            ]
        if legal:
            legal_actions[agent] = list(legal)
        if agent_info:
            info[agent] = agent_info
    return {
        "step": step,
        "time": at,
        "env_seconds": env_seconds,
        "actions": {agent: _message_dict(a) if isinstance(a, tuple) else a for agent, a in actions},
        "rewards": rewards,
        "components": components,
        "messages": messages,
        "checklist": checklist,
        "legal_actions": legal_actions,
        "info": info,
        "next_agent": next_agent,
        "done": done,
        "infra_failure": infra_failure,
    }


def _message_tuple(message: t.Message) -> tuple[Any, ...]:
    calls = tuple([(c.id, c.name, c.arguments) for c in message.tool_calls]) if message.tool_calls else ()
    return (message.role, message.content, message.name, calls, message.tool_call_id)


def _checklist_tuple(c: t.ChecklistItemResult) -> tuple[Any, ...]:
    evidence = tuple([(e.turn, e.step, e.snippet) for e in c.evidence])
    return (c.item_id, c.turn, c.passed, c.weight, c.score, _STATUS_NAMES[c.status], c.reason, evidence)


def _message_dict(message: tuple[Any, ...]) -> dict[str, Any]:
    role, content, name, calls, tool_call_id = message
    return {
        "role": role,
        "content": content,
        "name": name,
        "tool_calls": [{"id": i, "name": n, "arguments": a} for i, n, a in calls],
        "tool_call_id": tool_call_id,
    }


def _action_summary(action: t.Action) -> Any:
    """An action as plain data (a chat message as `_message_tuple`; `_expand_entry` makes it a dict)."""
    if action.discrete is not None:
        return action.discrete
    if action.tensor is not None:
        return action.tensor.tolist()
    if action.message is not None:
        return _message_tuple(action.message)
    return action.text


class EpisodeTable:
    """All open episodes, bounded in total and per principal (episodes, and episodes holding sandboxes)."""

    def __init__(self, max_episodes: int, max_per_client: int, env_threads: int) -> None:
        self.max_episodes = max_episodes
        self.max_per_client = max_per_client  # for callers that name no principal quota
        self._episodes: dict[str, Episode] = {}
        self._per_principal: dict[str, int] = defaultdict(int)
        self._sandboxed: dict[str, int] = defaultdict(int)
        self._reserved = 0
        self.executor = ThreadPoolExecutor(max_workers=env_threads, thread_name_prefix="palaestra-env")

    def __len__(self) -> int:
        return len(self._episodes)

    def reserve(
        self,
        principal: str,
        count: int,
        max_episodes: int = 0,
        sandboxed: bool = False,
        max_sandboxes: int = 0,
    ) -> None:
        """Claim capacity for `count` episodes before building them, so concurrent opens cannot overshoot.
        `max_episodes` (0: the table's per-client default) and `max_sandboxes` (0: none) are the
        principal's quotas; a sandboxed episode counts as one sandbox."""
        if len(self._episodes) + self._reserved + count > self.max_episodes:
            raise exhausted(
                f"the server holds {len(self._episodes)} of at most {self.max_episodes} episodes; "
                f"close some before opening {count} more"
            )
        quota = max_episodes or self.max_per_client
        if self._per_principal[principal] + count > quota:
            raise exhausted(
                f"this client holds {self._per_principal[principal]} of at most {quota} episodes; "
                f"close some before opening {count} more"
            )
        if sandboxed and max_sandboxes and self._sandboxed[principal] + count > max_sandboxes:
            raise exhausted(
                f"this client holds {self._sandboxed[principal]} of at most {max_sandboxes} episodes "
                f"with sandboxes; close some before opening {count} more"
            )
        self._reserved += count
        self._per_principal[principal] += count
        if sandboxed:
            self._sandboxed[principal] += count

    def release_reservation(self, principal: str, count: int, sandboxed: bool = False) -> None:
        self._reserved -= count
        self._forget(self._per_principal, principal, count)
        if sandboxed:
            self._forget(self._sandboxed, principal, count)

    @staticmethod
    def _forget(counts: dict[str, int], principal: str, count: int) -> None:
        counts[principal] -= count
        if counts[principal] <= 0:
            del counts[principal]

    def add(
        self,
        registration: EnvRegistration,
        env: AnyEnv,
        owner: str,
        episode_id: str,
        record_trajectory: bool = True,
        principal: str = "",
        sandboxed: bool = False,
    ) -> Episode:
        """Turn one reserved slot (reserved for `principal`, default: the owner) into an episode."""
        self._reserved -= 1
        episode = Episode(
            episode_id,
            registration,
            env,
            owner,
            self.executor,
            principal=principal or owner,
            sandboxed=sandboxed,
            record_trajectory=record_trajectory,
        )
        self._episodes[episode.id] = episode
        return episode

    def get(self, episode_id: str, owner: str) -> Episode:
        episode = self._episodes.get(episode_id)
        if episode is None or episode.owner != owner:
            raise not_found(
                f"no open episode {episode_id!r} for this client (closed, reaped or never opened)"
            )
        return episode

    def pop(self, episode_id: str) -> Episode | None:
        episode = self._episodes.pop(episode_id, None)
        if episode is not None:
            self._forget(self._per_principal, episode.principal, 1)
            if episode.sandboxed:
                self._forget(self._sandboxed, episode.principal, 1)
        return episode

    def owned_by(self, owner: str) -> list[str]:
        return [e.id for e in self._episodes.values() if e.owner == owner]

    def owners(self) -> set[str]:
        return {e.owner for e in self._episodes.values()}

    def held_by(self, principal: str) -> int:
        return self._per_principal.get(principal, 0)

    def idle(self, owner_prefix: str, idle_seconds: float) -> list[str]:
        cutoff = time.monotonic() - idle_seconds
        return [
            e.id
            for e in self._episodes.values()
            if e.owner.startswith(owner_prefix) and e.last_active < cutoff and not e.lock.locked()
        ]

    def all_ids(self) -> list[str]:
        return list(self._episodes)

    def episodes(self) -> list[Episode]:
        """The open episodes (for views such as the dashboard; do not mutate them)."""
        return list(self._episodes.values())


def new_episode_id() -> str:
    return uuid.uuid4().hex
