"""GRPO on `math/arithmetic` with a tiny model built in code, on CPU, through a real Palaestra server.

1. Build a ~140k-parameter Llama-style model and a character-level tokenizer (no downloads).
2. Warm-start on the answer FORMAT only: a few supervised steps on replies `<expression> = \\boxed{N}`
   (the problem's expression restated, then a number) where N is drawn at random from 0-9, whatever
   the problem. The policy learns how to answer, not what: its held-out reward starts at chance (0.1).
3. GRPO on training-split problems of difficulty 0 (single-digit sums, answers 0-9, each equally
   likely); the held-out reward is the share of correct greedy answers on the `test` split's seeds.
   Only the `correct` outcome counts (`format` weight 0, no step checker): the reward is the accuracy.
4. Metrics to runs/grpo-math/metrics.jsonl and, with --plot, a plot (reward and components).

    python examples/train_grpo_math.py --steps 150 --plot docs/grpo_math.png
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from palaestra.agents.client import AsyncClient
from palaestra.agents.grpo import GRPOConfig, GRPOTrainer
from palaestra.agents.sft import format_only_examples, supervised_warmup
from palaestra.agents.tiny import build_model, build_tokenizer
from palaestra.agents.tokens import ChatCodec
from palaestra.agents.train_cli import (
    MetricsLog,
    opening_prompts,
    plot_metrics,
    read_metrics,
    server_address,
)
from palaestra.types import Message

ENV = "math/arithmetic"
# Reward = the `correct` outcome only, so that the held-out reward reads as accuracy (chance = 0.1).
GRADING = {"extract": ["boxed"], "step_checker": False, "weights": {"format": 0.0}}
TRAIN = {"difficulty": 0, "split": "train", **GRADING}
HELD_OUT = {"difficulty": 0, "split": "test", **GRADING}
ANSWERS = [str(n) for n in range(10)]


def boxed(prompt: Sequence[Message], answer: str) -> str:
    return f"\\boxed{{{answer}}}"


def grpo_config(args: argparse.Namespace) -> GRPOConfig:
    return GRPOConfig(
        env_id=ENV,
        group_size=args.group_size,
        tasks_per_step=args.tasks_per_step,
        task_options=TRAIN,
        eval_options=HELD_OUT,
        eval_tasks=args.eval_tasks,
        eval_temperature=0.0,
        learning_rate=args.lr,
        kl_beta=args.kl_beta,
        micro_batch_size=128,
        temperature=1.0,
        max_new_tokens=12,
        max_turns=1,
        seed=args.seed,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=args.seed)
    log = MetricsLog(args.out, tensorboard=False)
    with server_address(args.server) as address:
        async with AsyncClient(address) as client:
            prompts = await opening_prompts(client, ENV, TRAIN, args.warmup_examples, seed=args.seed + 7)
            examples = format_only_examples(prompts, boxed, ANSWERS, seed=args.seed)
            losses = supervised_warmup(
                model, ChatCodec(tokenizer), examples, steps=args.warmup_steps, seed=args.seed
            )
            print(f"format warm-up: {args.warmup_steps} steps, loss {losses[0]:.2f} -> {losses[-1]:.2f}")
            # Built after the warm-up, so the KL reference is the warm-started policy.
            trainer = GRPOTrainer(model, tokenizer, client, grpo_config(args))
            start = await trainer.evaluate()
            log.log(0, start)
            print(f"step 0: held-out reward {start['eval/reward']:.3f}", flush=True)
            started = time.perf_counter()
            metrics = start
            while trainer.step < args.steps:
                metrics = await trainer.train_step()
                if trainer.step % args.eval_every == 0 or trainer.step == args.steps:
                    metrics |= await trainer.evaluate()
                    print(
                        f"step {trainer.step}: train reward {metrics['train/reward']:.3f}, "
                        f"held-out {metrics['eval/reward']:.3f} ({time.perf_counter() - started:.0f}s)",
                        flush=True,
                    )
                log.log(trainer.step, metrics)
            seconds = time.perf_counter() - started
            trainer.save(args.out / "final")
    log.close()
    if args.plot:
        plot_metrics(read_metrics(log.path), args.plot, f"GRPO on {ENV}, difficulty 0 (tiny model, CPU)")
    return {"start": start["eval/reward"], "end": metrics["eval/reward"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default=None)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--tasks-per-step", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--kl-beta", type=float, default=0.1)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--warmup-examples", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-tasks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/grpo-math"))
    parser.add_argument("--plot", type=Path, default=None)
    result = asyncio.run(run(parser.parse_args()))
    print(f"held-out reward: {result['start']:.3f} -> {result['end']:.3f} ({result['seconds']:.0f}s of GRPO)")


if __name__ == "__main__":
    main()
