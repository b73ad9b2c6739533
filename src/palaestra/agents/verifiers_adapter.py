"""Palaestra environments as a `verifiers` (v1, verifiers >= 0.4) taskset and environment.

verifiers loads a taskset by id: the id is an importable module that exports, through `__all__`, one
`Taskset` subclass and optionally an `Env` and a `Harness`. This module is such a plugin, so verifiers'
own evaluation (and prime-rl, which drives the same environments) can run any Palaestra environment:

```
vf-eval palaestra.agents.verifiers_adapter \\
    --env.taskset.address 127.0.0.1:50051 --env.taskset.env-id math/arithmetic --env.taskset.num-tasks 50 \\
    -m my-model --client.base-url http://127.0.0.1:8000/v1 -r 4
```

* `PalaestraTaskset`: one task per seed (`seeds`, or `num_tasks` seeds from `first_seed`) of one
  environment on one server; `token` and `tls_root_cert` authenticate to it (they stay in the config,
  never in the task data that verifiers writes to its results).
* `PalaestraEnv.run()` opens the Palaestra episode, hands its opening messages to the model as the
  task's system prompt and prompt, then plays the exchange: each model reply is the action, each
  answer of the environment the next user turn, until the episode ends (or `max_turns` replies).
  The episode's return is recorded as the reward `palaestra` (weight 1) and each reward component as a
  metric. An infrastructure failure raises, so verifiers records an errored episode, never a reward.
* Tools: verifiers' harnesses execute tools through MCP servers of their own, so a Palaestra
  environment's tools travel as text: their schemas are listed in the system prompt and the model
  calls them by writing `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (as Qwen and Hermes
  models do); the tool results come back as the next user turn.
* `PalaestraHarness` is verifiers' plain chat harness (`null`: one model call per turn, no bash, no
  code execution); another harness can be chosen with `--env.agent.harness.id`.

All episodes of a process share one client per connection (`text_episode.Connection`). Install with
`pip install palaestra[verifiers]` (its pins, e.g. `mcp==2.0.0`, may call for a venv of its own).
"""

from __future__ import annotations

import asyncio
from typing import Any

import verifiers.v1 as vf
from pydantic import Field
from verifiers.v1.harnesses.null import NullHarness

from palaestra.agents.text_episode import Connection, TextEpisode, messages_text, tool_instructions
from palaestra.agents.tokens import parse_assistant_text

__all__ = ["PalaestraEnv", "PalaestraHarness", "PalaestraTaskset"]


class PalaestraInfraError(RuntimeError):
    """The server's infrastructure failed during an episode (not the policy's doing)."""


class PalaestraTasksetConfig(vf.TasksetConfig):  # type: ignore[misc]
    address: str = "127.0.0.1:50051"
    """host:port of the Palaestra server."""
    env_id: str = "math/arithmetic"
    """The Palaestra environment, e.g. math/arithmetic or tools/shop."""
    token: str | None = None
    """Bearer token, when the server requires one."""
    tls_root_cert: str | None = None
    """PEM file of the CA that signed the server's certificate (TLS)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Environment options passed when each episode opens."""
    seeds: list[int] | None = None
    """Explicit seeds, one task each; default: `num_tasks` seeds from `first_seed`."""
    num_tasks: int = 100
    first_seed: int = 0

    def connection(self) -> Connection:
        return Connection(self.address, self.token, self.tls_root_cert)


class PalaestraData(vf.TaskData):  # type: ignore[misc]
    env_id: str
    seed: int
    options: dict[str, Any] = Field(default_factory=dict)


class PalaestraTask(vf.Task[PalaestraData]):  # type: ignore[misc]
    pass


class PalaestraTaskset(vf.Taskset[PalaestraTask, PalaestraTasksetConfig]):  # type: ignore[misc]
    def load(self) -> Any:
        config = self.config
        seeds = (
            config.seeds
            if config.seeds is not None
            else range(config.first_seed, config.first_seed + config.num_tasks)
        )
        for seed in seeds:
            yield PalaestraTask(
                PalaestraData(
                    name=f"{config.env_id}#{seed}",
                    prompt=None,
                    env_id=config.env_id,
                    seed=int(seed),
                    options=dict(config.options),
                ),
                config.task,
            )


class PalaestraEnvConfig(vf.EnvConfig):  # type: ignore[misc]
    agent: vf.AgentConfig = vf.AgentConfig(runtime=vf.SubprocessConfig())
    """The policy's seat; its chat harness runs as a local subprocess (it executes no code)."""
    max_turns: int = 16
    """Most model replies per episode (the environment's own step limit usually ends it first)."""


class PalaestraHarness(NullHarness):  # type: ignore[misc]
    """verifiers' plain chat harness: the model answers each turn with one reply."""


class PalaestraEnv(vf.Env[PalaestraEnvConfig]):  # type: ignore[misc]
    async def run(self, task: PalaestraTask, agents: Any) -> None:
        config: PalaestraTasksetConfig = self.taskset.config
        data = task.data
        episode = TextEpisode(config.connection().shared_client(), data.env_id, data.options)
        try:
            await self._play(task, agents, episode)
        finally:
            await asyncio.to_thread(episode.close)

    async def _play(self, task: PalaestraTask, agents: Any, episode: TextEpisode) -> None:
        opening = await asyncio.to_thread(episode.open, seed=task.data.seed)
        _raise_on_failure(episode)
        system = messages_text([m for m in opening if m.role == "system"])
        if episode.tools:
            system = f"{system}\n\n{tool_instructions(episode.tools)}".strip()
        prompt = messages_text([m for m in opening if m.role != "system"])
        opened = task.with_data(prompt=prompt, system_prompt=system or None)
        replies = 0
        async with agents.agent.interaction(opened) as interaction:
            segment = await interaction.turn()
            while not segment.terminated:
                replies += 1
                message = parse_assistant_text(segment.last_reply)
                new = await asyncio.to_thread(episode.send, message)
                _raise_on_failure(episode)
                if episode.done or replies >= self.config.max_turns:
                    break
                segment = await interaction.turn(messages_text(new) or "(no output)")
            # recorded before the interaction closes, so verifiers' own log line shows them too
            trace = interaction.trace
            trace.record_reward("palaestra", episode.reward or 0.0)
            trace.record_metrics({f"palaestra/{name}": value for name, value in episode.components.items()})
            trace.record_metric("palaestra/episode_done", float(episode.done))


def _raise_on_failure(episode: TextEpisode) -> None:
    if episode.infra_failure is not None:
        failure = episode.infra_failure
        raise PalaestraInfraError(f"{episode.env_id}: {failure.source}: {failure.message}")
