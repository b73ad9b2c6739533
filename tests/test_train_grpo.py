"""GRPO mechanics: per-turn credit, masked loss, multi-turn runs through the server, checkpoints."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from palaestra.agents.client import AsyncClient
from palaestra.agents.grpo import GRPOConfig, GRPOTrainer, TrainSample, episode_samples
from palaestra.agents.rewards import RewardMixer
from palaestra.agents.rollout import EpisodeRollout
from palaestra.agents.sft import supervised_warmup
from palaestra.agents.tiny import build_model, build_tokenizer
from palaestra.agents.tokens import Transcript
from palaestra.agents.train_runs import scripted_examples
from palaestra.plugins.echo import WORDS
from palaestra.types import RewardComponent, RewardKind


def _episode(
    group: int, turn_rewards: list[list[RewardComponent]], turn_lengths: list[int]
) -> EpisodeRollout:
    transcript = Transcript()
    for length in turn_lengths:
        transcript.add_environment([5, 6])  # environment tokens
        transcript.add_policy([7] * length)
    return EpisodeRollout(
        episode_id=f"e{group}-{len(turn_lengths)}",
        group=group,
        transcript=transcript,
        turn_components=turn_rewards,
    )


def test_each_turn_gets_the_credit_it_earned_and_environment_tokens_get_none() -> None:
    process = RewardComponent("step_ok", RewardKind.PROCESS, 1.0)
    outcome = RewardComponent("correct", RewardKind.OUTCOME, 1.0)
    miss = RewardComponent("correct", RewardKind.OUTCOME, 0.0)
    good = _episode(0, [[process], [outcome]], [3, 2])
    bad = _episode(0, [[], [miss]], [3, 2])
    [good_sample, bad_sample] = episode_samples([[good, bad]], RewardMixer(), scale_by_std=False)
    env = [i for i, m in enumerate(good_sample.policy_mask) if not m]
    assert all(good_sample.advantages[i] == 0.0 for i in env)
    (s0, e0), (s1, e1) = good.transcript.turns
    # returns-to-go: good (2, 1), bad (0, 0); per-turn baselines (1, 0.5)
    assert good_sample.advantages[s0:e0] == [1.0] * 3
    assert good_sample.advantages[s1:e1] == [0.5] * 2
    assert bad_sample.advantages[s0:e0] == [-1.0] * 3


def test_the_loss_ignores_environment_tokens() -> None:
    tokenizer = build_tokenizer()
    ids = tokenizer.encode("<|user|>hi<|end|><|assistant|>ok<|end|>")
    mask = [False] * 5 + [True] * 3  # <|user|> h i <|end|> <|assistant|> | o k <|end|>
    updated = []
    for env_advantage in (0.0, 5.0):  # whatever sits on environment tokens must not matter
        model = build_model(tokenizer, seed=0)
        trainer = GRPOTrainer(model, tokenizer, None, GRPOConfig(env_id="none"))  # type: ignore[arg-type]
        trainer.update([TrainSample(ids, mask, [env_advantage] * 5 + [1.0] * 3)])
        updated.append({n: p.detach().clone() for n, p in model.named_parameters()})
    initial = dict(build_model(tokenizer, seed=0).named_parameters())
    assert any(not torch.equal(updated[0][n], initial[n]) for n in initial)  # it did learn
    for name in initial:
        assert torch.equal(updated[0][name], updated[1][name]), name
    # A sample with no policy tokens carries no gradient at all.
    assert trainer.update([TrainSample(ids, [False] * 8, [1.0] * 8)])["samples"] == 0.0


async def test_multi_turn_grpo_runs_end_to_end_through_the_server(
    server_address: str, tmp_path: Path
) -> None:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=1)
    config = GRPOConfig(
        env_id="echo/text",
        group_size=8,
        tasks_per_step=3,
        task_options={"turns": 3},
        eval_tasks=4,
        max_new_tokens=8,
        max_turns=3,
        learning_rate=1e-3,
        seed=1,
    )
    async with AsyncClient(server_address) as client:
        trainer = GRPOTrainer(model, tokenizer, client, config)
        # Warm-up: reply with one of the plugin's words, the requested one only 30% of the time. The
        # policy then says the right word now and then, so episodes run 1-3 turns and groups disagree.
        rng = random.Random(0)
        scripted = await scripted_examples(client, "echo/text", {}, count=60, seed=5)
        examples = [(prompt, word if rng.random() < 0.3 else rng.choice(WORDS)) for prompt, word in scripted]
        supervised_warmup(model, trainer.codec, examples, steps=100, batch_size=16)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        metrics = await trainer.train_step()
        evaluation = await trainer.evaluate()
        assert metrics["train/turns"] > 1.0  # episodes really went on for several turns
        assert metrics["train/dropped_episodes"] == 0.0
        assert metrics["samples"] > 0, metrics  # some groups had both successes and failures
        assert "train/component/said_word" in metrics
        assert torch.isfinite(torch.tensor(metrics["loss"]))
        assert 0.0 <= evaluation["eval/reward"] <= 1.0
        checkpoint = trainer.save(tmp_path / "ckpt")
        saved = {n: p.detach().clone() for n, p in model.named_parameters()}
        assert any(not torch.equal(before[n], saved[n]) for n in saved)

        # Resume into a fresh model: same weights, same step, same optimizer moments, then train on.
        fresh_model = build_model(tokenizer, seed=99)
        resumed = GRPOTrainer(fresh_model, tokenizer, client, config)
        resumed.resume(checkpoint)
        assert resumed.step == 1
        for name, parameter in fresh_model.named_parameters():
            assert torch.equal(parameter, saved[name]), name
        assert (
            resumed.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()
        )
        assert resumed.training_tasks() == trainer.training_tasks()  # the task sampler continues too
        await resumed.train_step()
        assert resumed.step == 2
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "config.json").exists()
