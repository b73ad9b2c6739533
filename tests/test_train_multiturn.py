"""Multi-turn GRPO with a tool: `math/arithmetic-tools` end to end through the real server.

A tiny model is warm-started on the scripted agent's two-turn episodes (call the sandboxed `python`
tool, then answer from its output), rendered token for token as the rollout engine renders them; then
GRPO rolls out groups of episodes and updates the model. The test checks that the episodes really went
tool call -> tool result -> final answer, that every turn got its own credit and advantage, that tool
output never enters the loss, and that the update changed the weights.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from palaestra.agents.client import AsyncClient
from palaestra.agents.generation import GenerationBackend, Sample, SamplingSettings
from palaestra.agents.grpo import (
    GRPOConfig,
    GRPOTrainer,
    TrainSample,
    episode_samples,
    pad_batch,
    token_logprobs,
)
from palaestra.agents.rewards import drop_infra_failures
from palaestra.agents.rollout import EpisodeRollout, RolloutEngine, TaskRequest, TokenPolicy
from palaestra.agents.tiny import build_model, build_tokenizer
from palaestra.agents.tokens import ChatCodec, message_to_template
from palaestra.plugins.math.reference import Policy as ScriptedAgent
from palaestra.plugins.math.reference import make_scripted_policy
from palaestra.types import (
    DEFAULT_AGENT,
    AgentResult,
    ComponentStatus,
    EpisodeStep,
    Message,
    Observation,
    RewardKind,
)

ENV_ID = "math/arithmetic-tools"
EASY = {"difficulty": 1}
MAX_CONTEXT = 768  # system prompt + problem + tool call + tool output + answer, one token per character
# Rendered before an assistant turn, so the turn's own text can be cut out of the template's output.
STAND_IN = [{"role": "user", "content": "x"}]


def assistant_turn_ids(codec: ChatCodec, message: Message, tools: Sequence[dict[str, Any]]) -> list[int]:
    """The ids the policy would have to sample to say `message`: its rendered text and the stop token."""
    before = codec.render(STAND_IN, tools, generation=True)
    after = codec.render([*STAND_IN, message_to_template(message)], tools, generation=False)
    assert after.startswith(before)
    turn = after[len(before) :]
    return [*codec.encode(turn[: turn.rindex(codec.stop_text)]), codec.stop_ids[0]]


class ScriptedTokenPolicy:
    """The math plugin's scripted agent as a `Policy`: its replies go into the transcripts as if sampled.

    Driving it through `RolloutEngine` gives warm-up transcripts built exactly like the trainer's
    (same prompt rendering, same deltas), so the supervised targets are what the policy must produce.
    """

    def __init__(self, codec: ChatCodec) -> None:
        self.codec = codec
        self.renderer = TokenPolicy(codec, backend=None, settings=SamplingSettings())  # type: ignore[arg-type]
        self.agents: dict[str, ScriptedAgent] = {}

    def fits(self, episode: EpisodeRollout) -> bool:
        return len(episode.transcript) < MAX_CONTEXT

    async def act(self, episodes: Sequence[EpisodeRollout]) -> list[Message]:
        replies = []
        for episode in episodes:
            if episode.episode_id not in self.agents:  # the scripted agent keeps state per episode
                made = make_scripted_policy(ENV_ID)
                assert made is not None
                self.agents[episode.episode_id] = made
            agent = self.agents[episode.episode_id]
            seen = EpisodeStep(
                episode.episode_id, {DEFAULT_AGENT: AgentResult(Observation(messages=episode.pending))}
            )
            self.renderer.extend_prompt(episode)
            action = agent(seen)[DEFAULT_AGENT]
            reply = action.message or Message("assistant", action.as_text())
            episode.transcript.add_policy(assistant_turn_ids(self.codec, reply, episode.tools))
            replies.append(reply)
        return replies


def supervised_steps(model: Any, codec: ChatCodec, samples: Sequence[TrainSample], steps: int) -> float:
    """Cross-entropy on the policy tokens of whole multi-turn transcripts; returns the last loss."""
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        ids, attention, mask, _ = pad_batch(rng.sample(list(samples), 8), codec.tokenizer.pad_token_id)
        loss = -(token_logprobs(model, ids, attention) * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


class RecordingBackend:
    """Passes generation through and keeps every sample, to compare with what the loss mask covers."""

    def __init__(self, inner: GenerationBackend) -> None:
        self.inner = inner
        self.sampled: list[list[int]] = []

    def generate(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> list[Sample]:
        samples = self.inner.generate(prompts, settings)
        self.sampled.extend(sample.ids for sample in samples)
        return samples

    def sleep(self) -> None:
        self.inner.sleep()

    def wake(self) -> None:
        self.inner.wake()

    def load_weights(self, model: Any) -> None:
        self.inner.load_weights(model)


def tool_episode(episode: EpisodeRollout) -> bool:
    """Tool call, the tool's reply, then a final answer without a tool call."""
    roles = [m.role for m in episode.messages]
    calls = [m for m in episode.messages if m.role == "assistant" and m.tool_calls]
    answered = episode.messages[-1].role == "assistant" and not episode.messages[-1].tool_calls
    return bool(calls) and "tool" in roles and answered and episode.terminated


def check_credit_and_mask(episode: EpisodeRollout, sample: TrainSample, trainer: GRPOTrainer) -> None:
    transcript = episode.transcript
    assert len(transcript.turns) == episode.turns >= 2
    # The tool turn earned nothing; the final turn carries the outcome and the format credit.
    assert [c.name for c in episode.turn_components[0]] == []
    last = {c.name: c for c in episode.turn_components[-1]}
    assert last["correct"].kind is RewardKind.OUTCOME and last["correct"].status is ComponentStatus.OK
    assert last["format"].kind is RewardKind.FORMAT
    rewards = trainer.mixer.turn_rewards(episode.turn_components)
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)
    assert rewards[-1] == pytest.approx(sum(trainer.mixer.credit(c) for c in last.values()))
    # Each turn's tokens share that turn's advantage; environment tokens (the tool output) get none.
    for start, end in transcript.turns:
        assert len(set(sample.advantages[start:end])) == 1
    sampled = {i for start, end in transcript.turns for i in range(start, end)}
    assert {i for i, m in enumerate(sample.policy_mask) if m} == sampled
    assert all(sample.advantages[i] == 0.0 for i in range(len(sample.ids)) if i not in sampled)
    tool_token = trainer.tokenizer.convert_tokens_to_ids("<|tool|>")
    tool_at = transcript.ids.index(tool_token)
    end_of_tool = transcript.ids.index(trainer.codec.stop_ids[0], tool_at)
    assert not any(transcript.policy_mask[tool_at : end_of_tool + 1])
    tool_text = next(m.content for m in episode.messages if m.role == "tool")
    assert trainer.codec.encode(tool_text) == transcript.ids[tool_at + 1 : end_of_tool]


async def test_grpo_on_math_tool_episodes_credits_each_turn(server_address: str) -> None:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=3, max_positions=MAX_CONTEXT)
    config = GRPOConfig(
        env_id=ENV_ID,
        group_size=6,
        tasks_per_step=2,
        task_options=EASY,
        max_new_tokens=120,  # the tool call is about 90 characters
        max_turns=3,
        max_context=MAX_CONTEXT,
        temperature=0.5,
        learning_rate=1e-4,
        seed=3,
    )
    async with AsyncClient(server_address) as client:
        trainer = GRPOTrainer(model, tokenizer, client, config)

        # Warm-up: the scripted agent's two-turn episodes, as token-exact transcripts.
        scripted = ScriptedTokenPolicy(trainer.codec)
        tasks = [TaskRequest(seed=seed, options=EASY) for seed in range(24)]
        teacher = await RolloutEngine(client, scripted, max_turns=3).run(ENV_ID, tasks, group_size=1)
        demos = [episode for [episode] in teacher]
        assert all(tool_episode(e) and e.turns == 2 for e in demos)
        assert all(sum(c.value for c in e.turn_components[-1] if c.name == "correct") == 1 for e in demos)
        warm = [
            TrainSample(e.transcript.ids, e.transcript.policy_mask, [1.0] * len(e.transcript)) for e in demos
        ]
        assert supervised_steps(model, trainer.codec, warm, steps=100) < 0.5

        # One GRPO step, spelled out so the rollouts can be inspected: roll out, credit, update.
        backend = RecordingBackend(trainer.backend)
        policy = TokenPolicy(
            trainer.codec,
            backend,
            SamplingSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature),
            max_context=MAX_CONTEXT,
        )
        groups = await RolloutEngine(client, policy, max_turns=config.max_turns).run(
            ENV_ID, trainer.training_tasks(), config.group_size
        )
        kept, dropped = drop_infra_failures(groups)
        assert dropped == 0
        samples = episode_samples(kept, trainer.mixer)
        episodes = [e for group in kept for e in group]
        multi_turn = [(e, s) for e, s in zip(episodes, samples, strict=True) if tool_episode(e)]
        assert len(multi_turn) >= len(episodes) // 2, [[m.role for m in e.messages] for e in episodes]
        for episode, sample in multi_turn:
            check_credit_and_mask(episode, sample, trainer)
        # The sandbox really ran the model's code: its output (or Python's complaint) came back, not the
        # environment's refusal of a malformed call.
        tool_replies = [m.content for e, _ in multi_turn for m in e.messages if m.role == "tool"]
        assert all(text.strip() and not text.startswith("error:") for text in tool_replies)
        # The loss mask covers exactly the sampled turns, id for id, and nothing else.
        for episode in episodes:
            spans = {i for start, end in episode.transcript.turns for i in range(start, end)}
            assert {i for i, m in enumerate(episode.transcript.policy_mask) if m} == spans
        turns = [tuple(e.transcript.ids[s:t]) for e in episodes for s, t in e.transcript.turns]
        assert sorted(turns) == sorted(tuple(ids) for ids in backend.sampled)

        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        update = trainer.update(samples)
        assert update["samples"] > 0, update  # some groups disagreed, so there was a signal
        assert torch.isfinite(torch.tensor(update["loss"]))
        assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())

        # And the trainer's own step runs the same loop end to end.
        metrics = await trainer.train_step()
        assert metrics["train/turns"] > 1.0 and metrics["train/dropped_episodes"] == 0.0
        assert "train/component/correct" in metrics and "train/component/format" in metrics
        assert torch.isfinite(torch.tensor(metrics["loss"]))
