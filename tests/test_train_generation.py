"""Generation backends: the parts that need no GPU (vLLM output handling) and the OpenAI-compatible policy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import httpx

from palaestra.agents.generation import (
    OpenAIChatPolicy,
    SamplingSettings,
    cut_at_stop,
    sample_from_vllm_completion,
    vllm_sampling_kwargs,
)
from palaestra.types import Message


def test_samples_are_cut_after_the_first_stop_token() -> None:
    sample = cut_at_stop([5, 6, 2, 7], [-0.1, -0.2, -0.3, -0.4], stop_ids=[2])
    assert (sample.ids, sample.logprobs, sample.stopped) == ([5, 6, 2], [-0.1, -0.2, -0.3], True)
    assert cut_at_stop([5, 6], [-0.1, -0.2], stop_ids=[2]).stopped is False


def test_vllm_outputs_become_samples_with_the_sampled_tokens_logprobs() -> None:
    @dataclass
    class Logprob:
        logprob: float

    completion = SimpleNamespace(
        token_ids=[11, 12, 2],
        logprobs=[{11: Logprob(-0.5)}, {12: Logprob(-1.5), 9: Logprob(-0.1)}, {2: Logprob(-0.2)}],
    )
    sample = sample_from_vllm_completion(completion, stop_ids=[2])
    assert sample.ids == [11, 12, 2] and sample.logprobs == [-0.5, -1.5, -0.2] and sample.stopped
    kwargs = vllm_sampling_kwargs(SamplingSettings(max_new_tokens=7, temperature=0.8, stop_ids=(2,)))
    assert kwargs["max_tokens"] == 7 and kwargs["stop_token_ids"] == [2] and kwargs["logprobs"] == 0


async def test_openai_chat_policy_sends_messages_and_tools_and_reads_tool_calls() -> None:
    seen: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        call = {"id": "c1", "type": "function", "function": {"name": "python", "arguments": '{"code": "1"}'}}
        reply = {"role": "assistant", "content": None, "tool_calls": [call]}
        return httpx.Response(200, json={"choices": [{"message": reply}]})

    policy = OpenAIChatPolicy("http://endpoint/v1", "some-model")
    policy.http = httpx.AsyncClient(base_url="http://endpoint/v1", transport=httpx.MockTransport(answer))
    episode = SimpleNamespace(
        messages=[Message("user", "2+2?")], tools=[{"type": "function", "function": {"name": "python"}}]
    )
    [message] = await policy.act([episode])
    await policy.aclose()
    assert seen[0]["model"] == "some-model" and seen[0]["messages"] == [{"role": "user", "content": "2+2?"}]
    assert seen[0]["tools"] == episode.tools
    assert message.tool_calls[0].name == "python" and message.tool_calls[0].arguments == '{"code": "1"}'
