"""Token-exact multi-turn transcripts: the policy's sampled ids are never re-tokenized."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from palaestra.agents.client import AsyncClient
from palaestra.agents.generation import Sample, SamplingSettings, TransformersBackend
from palaestra.agents.rollout import RolloutEngine, TaskRequest, TokenPolicy
from palaestra.agents.tiny import CHAT_TEMPLATE, build_model, build_tokenizer
from palaestra.agents.tokens import ChatCodec, Transcript, parse_assistant_text
from palaestra.types import Message

TOOLS = [{"type": "function", "function": {"name": "python", "description": "run", "parameters": {}}}]


class RecordingBackend:
    """Wraps a backend and keeps every prompt it was given and every sample it returned."""

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner = inner
        self.calls: list[tuple[list[list[int]], list[Sample]]] = []

    def generate(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> list[Sample]:
        samples = self.inner.generate(prompts, settings)
        self.calls.append(([list(p) for p in prompts], samples))
        return samples

    def sleep(self) -> None: ...

    def wake(self) -> None: ...

    def load_weights(self, model: object) -> None: ...


async def test_turn_k_plus_1_starts_with_the_exact_ids_of_turn_k(server_address: str) -> None:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=3)
    codec = ChatCodec(tokenizer)
    backend = RecordingBackend(TransformersBackend(model, tokenizer.pad_token_id))
    # A random model rarely says the word, so echo/text runs all its turns: a real multi-turn rollout.
    policy = TokenPolicy(
        codec, backend, SamplingSettings(max_new_tokens=12, temperature=1.0), max_context=4096
    )
    async with AsyncClient(server_address) as client:
        engine = RolloutEngine(client, policy, max_turns=4)
        groups = await engine.run("echo/text", [TaskRequest(seed=1, options={"turns": 4})], group_size=3)

    episodes = groups[0]
    assert len(episodes) == 3
    assert max(e.turns for e in episodes) >= 2, "the test needs at least one multi-turn episode"
    # Reconstruct, per episode, the prompt fed at each turn and the ids sampled at it.
    per_episode: dict[int, list[tuple[list[int], Sample]]] = {}
    order = list(episodes)
    for prompts, samples in backend.calls:
        running = [e for e in order if len(per_episode.get(id(e), [])) < e.turns]
        for episode, prompt, sample in zip(running, prompts, samples, strict=True):
            per_episode.setdefault(id(episode), []).append((prompt, sample))
    for episode in episodes:
        turns = per_episode[id(episode)]
        for (prompt, sample), (next_prompt, _) in itertools.pairwise(turns):
            exact = prompt + sample.ids
            assert next_prompt[: len(exact)] == exact  # the sampled ids are kept, not re-tokenized
            assert len(next_prompt) > len(exact)  # ... and the environment's reply was appended
        transcript = episode.transcript
        final_prompt, final_sample = turns[-1]
        assert transcript.ids == final_prompt + final_sample.ids
        # Loss mask: exactly the sampled ids; every environment / template token is masked out.
        sampled = [tok for _, s in turns for tok in s.ids]
        assert [tok for tok, m in zip(transcript.ids, transcript.policy_mask, strict=True) if m] == sampled
        assert transcript.turns == [(len(p), len(p) + len(s.ids)) for p, s in turns]
        for start, end in transcript.turns:
            assert all(transcript.policy_mask[start:end])
        assert sum(transcript.policy_mask) == len(sampled)


def test_delta_rendering_matches_the_full_template_rendering() -> None:
    tokenizer = build_tokenizer()
    codec = ChatCodec(tokenizer)
    opening = [Message("system", "Be brief."), Message("user", "What is 2+2?")]
    tool = Message("tool", "4\n", tool_call_id="call_0")
    transcript = Transcript()
    transcript.add_environment(codec.prompt_ids(opening, TOOLS))
    reply_text = 'Let me check.<tool_call>{"name": "python", "arguments": {"code": "print(2+2)"}}</tool_call>'
    transcript.add_policy([*codec.encode(reply_text), tokenizer.eos_token_id])
    transcript.add_environment(codec.delta_ids([tool], TOOLS, policy_stopped=True))
    whole = codec.render(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "python", "arguments": '{"code": "print(2+2)"}'},
                    }
                ],
            },
            {"role": "tool", "content": "4\n", "tool_call_id": "call_0"},
        ],
        TOOLS,
        generation=True,
    )
    assert tokenizer.decode(transcript.ids) == whole
    assert "tools: python" in whole  # tool schemas reach the template


def test_a_turn_cut_by_the_token_budget_is_closed_before_the_delta() -> None:
    tokenizer = build_tokenizer()
    # A template that writes a newline after each end-of-turn token, like many real ones.
    tokenizer.chat_template = CHAT_TEMPLATE.replace("<|end|>", "<|end|>{{ '\\n' }}")
    codec = ChatCodec(tokenizer)
    assert codec.turn_suffix == "\n"
    news = [Message("user", "again")]
    stopped = tokenizer.decode(codec.delta_ids(news, policy_stopped=True))
    cut = tokenizer.decode(codec.delta_ids(news, policy_stopped=False))
    assert stopped == "\n<|user|>again<|end|>\n<|assistant|>"
    assert cut == "<|end|>" + stopped


def test_tool_calls_are_parsed_from_the_policy_text() -> None:
    message = parse_assistant_text(
        'Run it. <tool_call>{"name": "python", "arguments": {"code": "1"}}</tool_call>'
    )
    assert message.content == "Run it."
    assert [(c.name, c.arguments) for c in message.tool_calls] == [("python", '{"code": "1"}')]
    broken = parse_assistant_text("<tool_call>{not json}</tool_call>")
    assert broken.tool_calls == [] and "not json" in broken.content
