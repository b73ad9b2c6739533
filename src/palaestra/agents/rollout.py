"""The rollout engine: many chat episodes at once over one batched session stream.

For each task the engine opens a group of G episodes of the same task (`open(..., count=G)`), then
runs all episodes of all groups in lock step: one batched generation call for every episode still
running, one `step_many` message carrying all their actions, until each episode is terminated,
truncated, failed, or out of the engine's turn/token budget. Tool calls travel as assistant messages
with `tool_calls`; tool schemas from the first observation are rendered by the chat template.

The engine needs only three client calls (`open`, `step_many`, `close`), so tests can drive it with an
in-process stand-in as well as with the real gRPC client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from palaestra.agents.generation import GenerationBackend, SamplingSettings
from palaestra.agents.tokens import ChatCodec, Transcript, parse_assistant_text
from palaestra.types import (
    Action,
    ChecklistItemResult,
    EpisodeStep,
    EpisodeSummary,
    InfraFailure,
    Message,
    RewardComponent,
)


class EpisodeClient(Protocol):
    """The part of `palaestra.agents.client.AsyncClient` the engine uses."""

    async def open(
        self,
        env_id: str,
        *,
        seed: int | None = None,
        options: Mapping[str, Any] | None = None,
        task: int | str | None = None,
        count: int = 1,
    ) -> list[EpisodeStep]: ...

    async def step_many(
        self, actions: Mapping[str, Any], *, raise_errors: bool = True
    ) -> Mapping[str, EpisodeStep | Exception]: ...

    async def close(self, episode_ids: Sequence[str]) -> list[EpisodeSummary]: ...


@dataclass
class TaskRequest:
    """One task to open a group for: how the server picks it (seed, options, task selector)."""

    seed: int | None = None
    options: dict[str, Any] | None = None
    task: int | str | None = None


@dataclass
class EpisodeRollout:
    """Everything one episode produced, as the trainer needs it."""

    episode_id: str
    group: int
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    transcript: Transcript = field(default_factory=Transcript)
    turn_components: list[list[RewardComponent]] = field(default_factory=list)  # one list per policy turn
    opening_components: list[RewardComponent] = field(default_factory=list)  # from reset (rare)
    checklist: list[ChecklistItemResult] = field(default_factory=list)
    infra_failure: InfraFailure | None = None
    terminated: bool = False
    truncated: bool = False
    out_of_budget: bool = False  # stopped by the engine's turn or token budget
    rejected: str = ""  # the environment refused the last action (INVALID_ARGUMENT); the engine stops there
    pending: list[Message] = field(default_factory=list)  # env messages not yet in the transcript
    last_turn_stopped: bool = True

    @property
    def done(self) -> bool:
        ended = self.terminated or self.truncated or self.out_of_budget or bool(self.rejected)
        return ended or self.infra_failure is not None

    @property
    def turns(self) -> int:
        return len(self.turn_components)

    def absorb(self, step: EpisodeStep | Exception, *, opening: bool = False) -> None:
        """Take in the server's answer to an open or a step."""
        if isinstance(step, Exception):  # a refused action: no reward for that turn, and we stop
            self.rejected = str(step) or type(step).__name__
            self.turn_components.append([])
            return
        if step.infra_failure is not None:
            self.infra_failure = step.infra_failure
            return
        result = step.result
        observation = result.observation
        if opening:
            self.tools = list(observation.tools)
            self.opening_components = list(result.components)
        else:
            self.turn_components.append(list(result.components))
        self.checklist.extend(result.checklist)
        self.messages.extend(observation.messages)
        self.pending.extend(observation.messages)
        self.terminated = result.terminated
        self.truncated = result.truncated
        if step.done and not (self.terminated or self.truncated):
            self.truncated = True  # the server ended it (e.g. its own step limit)


class Policy(Protocol):
    """Answers every running episode with one assistant message (and records tokens if it trains)."""

    async def act(self, episodes: Sequence[EpisodeRollout]) -> list[Message]: ...

    def fits(self, episode: EpisodeRollout) -> bool:
        """Whether another turn fits the token budget."""
        ...


class TokenPolicy:
    """A trainable policy: a generation backend plus the chat codec that keeps transcripts token-exact."""

    def __init__(
        self,
        codec: ChatCodec,
        backend: GenerationBackend,
        settings: SamplingSettings,
        *,
        max_context: int = 1024,
    ) -> None:
        self.codec = codec
        self.backend = backend
        self.settings = settings
        if not settings.stop_ids:
            self.settings.stop_ids = tuple(codec.stop_ids)
        self.max_context = max_context
        self.generation_seconds = 0.0  # time spent generating (the rest of a rollout is the server's)

    def fits(self, episode: EpisodeRollout) -> bool:
        # An estimate before the pending messages are rendered: they are usually short.
        pending = sum(len(m.content) for m in episode.pending)
        return len(episode.transcript) + pending + self.settings.max_new_tokens <= self.max_context

    def extend_prompt(self, episode: EpisodeRollout) -> list[int]:
        """Append the pending environment messages to the transcript; the result is the next prompt."""
        transcript = episode.transcript
        if not transcript.ids:
            transcript.add_environment(self.codec.prompt_ids(episode.pending, episode.tools))
        else:
            delta = self.codec.delta_ids(
                episode.pending, episode.tools, policy_stopped=episode.last_turn_stopped
            )
            transcript.add_environment(delta)
        episode.pending = []
        return list(transcript.ids)

    async def act(self, episodes: Sequence[EpisodeRollout]) -> list[Message]:
        prompts = [self.extend_prompt(episode) for episode in episodes]
        # Generation is CPU/GPU bound: off the event loop, so the session stream stays serviced.
        started = time.perf_counter()
        samples = await asyncio.to_thread(self.backend.generate, prompts, self.settings)
        self.generation_seconds += time.perf_counter() - started
        replies = []
        for episode, sample in zip(episodes, samples, strict=True):
            episode.transcript.add_policy(sample.ids, sample.logprobs)
            episode.last_turn_stopped = sample.stopped
            replies.append(parse_assistant_text(self.codec.decode_turn(sample.ids)))
        return replies


def as_action(message: Message) -> Action:
    return Action(message=message) if message.tool_calls else Action(text=message.content)


@dataclass
class RolloutEngine:
    client: EpisodeClient
    policy: Policy
    max_turns: int = 8

    async def run(
        self, env_id: str, tasks: Sequence[TaskRequest], group_size: int
    ) -> list[list[EpisodeRollout]]:
        """Open a group of `group_size` episodes per task, play them all to the end, close them."""
        opened = await asyncio.gather(
            *(
                self.client.open(env_id, seed=t.seed, options=t.options, task=t.task, count=group_size)
                for t in tasks
            )
        )
        groups: list[list[EpisodeRollout]] = []
        for group_index, steps in enumerate(opened):
            group = []
            for step in steps:
                episode = EpisodeRollout(episode_id=step.episode_id, group=group_index)
                episode.absorb(step, opening=True)
                group.append(episode)
            groups.append(group)
        episodes = [episode for group in groups for episode in group]
        try:
            await self._play(episodes)
        finally:
            await self.client.close([episode.episode_id for episode in episodes])
        return groups

    async def _play(self, episodes: Sequence[EpisodeRollout]) -> None:
        while True:
            for episode in episodes:
                if not episode.done and (episode.turns >= self.max_turns or not self.policy.fits(episode)):
                    episode.out_of_budget = True
            running = [episode for episode in episodes if not episode.done]
            if not running:
                return
            replies = await self.policy.act(running)
            for episode, reply in zip(running, replies, strict=True):
                episode.messages.append(reply)
            actions = {e.episode_id: as_action(r) for e, r in zip(running, replies, strict=True)}
            results = await self.client.step_many(actions, raise_errors=False)
            for episode in running:
                episode.absorb(results[episode.episode_id])
