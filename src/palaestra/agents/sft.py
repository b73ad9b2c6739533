"""A few supervised steps to warm-start a policy on a task's answer format before RL.

Each example is the environment's opening messages and an assistant reply; the loss covers only the
reply's tokens (and its end-of-turn token), exactly as the policy would produce them.

`format_only_examples` makes replies that show the format but not the answers: every reply carries an
answer drawn at random, independently of the problem, so a warm-started policy knows how to answer but
is no better than chance at what to answer; any rise after that is the RL's doing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from palaestra.agents.grpo import TrainSample, pad_batch, token_logprobs
from palaestra.agents.tokens import ChatCodec
from palaestra.types import Message


def sft_sample(
    codec: ChatCodec, prompt: Sequence[Message], reply: str, tools: Sequence[dict[str, Any]] = ()
) -> TrainSample:
    prompt_ids = codec.prompt_ids(prompt, tools)
    reply_ids = [*codec.encode(reply), codec.stop_ids[0]]
    ids = prompt_ids + reply_ids
    mask = [False] * len(prompt_ids) + [True] * len(reply_ids)
    return TrainSample(ids=ids, policy_mask=mask, advantages=[1.0] * len(ids))


def format_only_examples(
    prompts: Sequence[Sequence[Message]],
    reply: Callable[[Sequence[Message], str], str],
    answers: Sequence[str],
    *,
    seed: int = 0,
) -> list[tuple[Sequence[Message], str]]:
    """(prompt, reply(prompt, answer)) with `answer` drawn uniformly from `answers` for every prompt."""
    rng = random.Random(seed)
    return [(prompt, reply(prompt, rng.choice(answers))) for prompt in prompts]


def supervised_warmup(
    model: Any,
    codec: ChatCodec,
    examples: Sequence[tuple[Sequence[Message], str]],
    *,
    steps: int = 50,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> list[float]:
    """Cross-entropy on the replies; returns the loss of each step."""
    rng = random.Random(seed)
    samples = [sft_sample(codec, prompt, reply) for prompt, reply in examples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    pad_id = codec.tokenizer.pad_token_id
    losses = []
    model.train()
    for _ in range(steps):
        ids, attention, mask, _ = pad_batch(rng.sample(samples, min(batch_size, len(samples))), pad_id)
        logp = token_logprobs(model, ids, attention)
        loss = -(logp * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses
