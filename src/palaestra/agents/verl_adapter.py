"""Palaestra environments as a verl agent loop (verl's `AgentLoopBase`, verl >= 0.9).

verl runs multi-turn rollouts through agent loops: for each dataset row an `AgentLoopBase` subclass
registered by name gets `run(sampling_params, **row)`, generates through verl's rollout servers
(`self.server_manager.generate`, token ids in and out) and returns an `AgentLoopOutput` (prompt ids,
response ids with a mask that is 1 on policy tokens, the trajectory's reward). Tools given to verl as
`BaseTool`s are created and released around every single call, so they cannot hold an episode; a
Palaestra environment is therefore an agent loop of its own:

* `PalaestraAgentLoop` (registered as `palaestra`) reads `env_id`, `seed` and optionally `task` from the
  row's `extra_info`, and the server from `extra_info["address"]` or the `PALAESTRA_ADDRESS` variable
  (`PALAESTRA_TOKEN`, `PALAESTRA_TLS_ROOT_CERT` for auth and TLS);
* it opens the episode, renders its opening messages and tools with the model's chat template (verl's
  Continuous Token builder, so the sampled tokens are kept exactly), and then alternates: generate,
  parse `<tool_call>` blocks into tool calls, step the episode, append the environment's messages;
* `reward_score` is the episode's return; an infrastructure failure raises (verl then fails the
  batch instead of training on a reward the policy did not earn).

Select it with `actor_rollout_ref.rollout.agent.default_agent_loop=palaestra` (or an `agent_name`
column) after importing this module. verl installs and imports on CPU, but its trainer needs GPUs and a
vLLM or SGLang rollout server; the test drives this loop with a scripted `server_manager`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from palaestra.agents.text_episode import Connection, TextEpisode
from palaestra.agents.tokens import message_to_template, parse_assistant_text


class PalaestraInfraError(RuntimeError):
    """The server's infrastructure failed during an episode (not the policy's doing)."""


@register("palaestra")
class PalaestraAgentLoop(AgentLoopBase):  # type: ignore[misc]
    """One Palaestra episode per dataset row, played token-exactly through verl's rollout servers."""

    max_turns = 16

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.response_length = int(self.rollout_config.response_length)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        info = dict(kwargs.get("extra_info") or {})
        if not info.get("env_id"):
            raise ValueError("a Palaestra row needs extra_info['env_id'] (and a 'seed')")
        connection = Connection(
            str(info.get("address") or os.environ.get("PALAESTRA_ADDRESS", "127.0.0.1:50051")),
            os.environ.get("PALAESTRA_TOKEN") or None,
            os.environ.get("PALAESTRA_TLS_ROOT_CERT") or None,
        )
        episode = TextEpisode(connection.shared_client(), str(info["env_id"]), info.get("options"))
        try:
            return await self._play(episode, info, sampling_params)
        finally:
            await asyncio.to_thread(episode.close)

    async def _play(
        self, episode: TextEpisode, info: dict[str, Any], sampling_params: dict[str, Any]
    ) -> AgentLoopOutput:
        opening = await asyncio.to_thread(episode.open, seed=info.get("seed"), task=info.get("task"))
        _raise_on_failure(episode)
        messages = [message_to_template(m) for m in opening]
        tools = episode.tools or None
        prompt_ids = await self.ct_build_initial_tokens(messages, tools=tools)
        runtime_ids = list(prompt_ids)
        mask: list[int] = []
        logprobs: list[float] | None = None
        turns = 0
        while not episode.done and turns < self.max_turns and len(mask) < self.response_length:
            output = await self.server_manager.generate(
                request_id=uuid4().hex, prompt_ids=runtime_ids, sampling_params=sampling_params
            )
            turns += 1
            if output.log_probs and logprobs is None:
                logprobs = [0.0] * len(mask)
            merged, mask, logprobs = await self.ct_merge_assistant_token(
                runtime_ids, output.token_ids, mask, logprobs, assistant_logprobs=output.log_probs or None
            )
            runtime_ids = list(merged.token_ids)
            reply = parse_assistant_text(self.tokenizer.decode(output.token_ids, skip_special_tokens=True))
            new = await asyncio.to_thread(episode.send, reply)
            _raise_on_failure(episode)
            previous = [*messages, message_to_template(reply)]
            messages = [*previous, *(message_to_template(m) for m in new)]
            if episode.done or not new or turns >= self.max_turns:
                break  # nothing after the policy's last turn: the response ends with policy tokens
            merged, mask, logprobs = await self.ct_merge_context_msg(
                previous, messages, runtime_ids, mask, logprobs, tools=tools
            )
            runtime_ids = list(merged.token_ids)
        response_ids = runtime_ids[len(prompt_ids) :]
        return AgentLoopOutput(
            prompt_ids=list(prompt_ids),
            response_ids=response_ids[: self.response_length],
            response_mask=mask[: self.response_length],
            response_logprobs=logprobs[: self.response_length] if logprobs else None,
            reward_score=episode.reward,
            num_turns=len(messages),
            metrics=AgentLoopMetrics(),
            extra_fields={"palaestra_components": dict(episode.components), "palaestra_done": episode.done},
        )


def _raise_on_failure(episode: TextEpisode) -> None:
    if episode.infra_failure is not None:
        failure = episode.infra_failure
        raise PalaestraInfraError(f"{episode.env_id}: {failure.source}: {failure.message}")
