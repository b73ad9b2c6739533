"""GRPO on `math/arithmetic` with a tiny model built in code, on CPU, through a real Palaestra server.

1. Build a ~140k-parameter Llama-style model and a character-level tokenizer (no downloads).
2. Warm-start: a few supervised steps on the task format. The examples come from the math plugin's
   scripted agent on training-split problems; only its final `\\boxed{...}` answer is kept as the reply.
3. GRPO on training-split problems; held-out reward measured on the plugin's `test` split (the policy
   sampled at its training temperature, one episode per held-out problem).
4. Metrics to runs/grpo-math/metrics.jsonl and a plot (reward and each component) to docs/ with --plot.

    python examples/train_grpo_math.py --steps 150 --plot docs/grpo_math.png
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path

from palaestra.agents.client import AsyncClient
from palaestra.agents.grpo import GRPOConfig, GRPOTrainer
from palaestra.agents.sft import supervised_warmup
from palaestra.agents.tiny import build_model, build_tokenizer
from palaestra.agents.train_cli import (
    MetricsLog,
    plot_metrics,
    read_metrics,
    scripted_examples,
    server_address,
)

ENV = "math/arithmetic"
TRAIN = {"difficulty": 1, "split": "train"}
HELD_OUT = {"difficulty": 1, "split": "test"}
_BOXED = re.compile(r"\\boxed\{[^}]*\}")


async def run(args: argparse.Namespace) -> dict[str, float]:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=args.seed)
    config = GRPOConfig(
        env_id=ENV,
        group_size=args.group_size,
        tasks_per_step=args.tasks_per_step,
        task_options=TRAIN,
        eval_options=HELD_OUT,
        eval_tasks=args.eval_tasks,
        eval_temperature=1.0,
        learning_rate=args.lr,
        epochs_per_batch=args.epochs,
        micro_batch_size=64,
        temperature=1.0,
        max_new_tokens=16,
        max_turns=1,
        seed=args.seed,
    )
    log = MetricsLog(args.out, tensorboard=False)
    with server_address(args.server) as address:
        async with AsyncClient(address) as client:
            trainer = GRPOTrainer(model, tokenizer, client, config)
            examples = await scripted_examples(client, ENV, TRAIN, args.warmup_examples, seed=args.seed + 7)
            format_only = [(prompt, _BOXED.findall(reply)[-1]) for prompt, reply in examples]
            losses = supervised_warmup(
                model, trainer.codec, format_only, steps=args.warmup_steps, seed=args.seed
            )
            print(f"warm-up: {args.warmup_steps} steps, loss {losses[0]:.2f} -> {losses[-1]:.2f}")
            start = await trainer.evaluate()
            log.log(0, start)
            print(f"step 0: held-out reward {start['eval/reward']:.3f}")
            started = time.perf_counter()
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
            trainer.save(args.out / "final")
    log.close()
    if args.plot:
        plot_metrics(read_metrics(log.path), args.plot, f"GRPO on {ENV} (tiny model, CPU)")
    return {"start": start["eval/reward"], "end": metrics["eval/reward"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default=None)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--tasks-per-step", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--epochs", type=int, default=4, help="optimizer passes over each batch (clipped)")
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--warmup-examples", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-tasks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/grpo-math"))
    parser.add_argument("--plot", type=Path, default=None)
    result = asyncio.run(run(parser.parse_args()))
    print(f"held-out reward: {result['start']:.3f} -> {result['end']:.3f}")


if __name__ == "__main__":
    main()
