"""A few supervised steps to warm-start a policy on a task's answer format before RL.

Each example is the environment's opening messages and an assistant reply; the loss covers only the
reply's tokens (and its end-of-turn token), exactly as the policy would produce them.
`SupervisedWarmup` runs in chunks, so a caller can stop it as soon as a check of its own passes
(e.g. a target accuracy on held-back training problems).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
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


class SupervisedWarmup:
    """Cross-entropy on the replies, run in as many chunks as the caller wants (one optimizer
    throughout), so a caller can stop as soon as a check it chooses passes."""

    def __init__(
        self,
        model: Any,
        codec: ChatCodec,
        examples: Sequence[tuple[Sequence[Message], str]],
        *,
        batch_size: int = 16,
        learning_rate: float = 3e-3,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.pad_id = codec.tokenizer.pad_token_id
        self.samples = [sft_sample(codec, prompt, reply) for prompt, reply in examples]
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
        self.rng = random.Random(seed)
        self.steps = 0

    def run(self, steps: int) -> list[float]:
        """`steps` optimizer steps on random batches; returns the loss of each."""
        losses = []
        self.model.train()
        for _ in range(steps):
            batch = self.rng.sample(self.samples, min(self.batch_size, len(self.samples)))
            ids, attention, mask, _ = pad_batch(batch, self.pad_id)
            logp = token_logprobs(self.model, ids, attention)
            loss = -(logp * mask).sum() / mask.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        self.steps += steps
        return losses


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
    """`steps` supervised steps in one go; returns the loss of each step."""
    warmup = SupervisedWarmup(
        model, codec, examples, batch_size=batch_size, learning_rate=learning_rate, seed=seed
    )
    return warmup.run(steps)
