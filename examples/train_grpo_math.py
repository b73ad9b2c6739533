"""GRPO on `math/arithmetic` with a tiny model built in code, on CPU, through a real Palaestra server.

The recipe (model, warm-up, GRPO settings, test measure) is `examples/grpo_math_recipe.py`;
`tests/test_train_grpo_math.py` runs a shorter version of it. This script runs the full curve, writes
metrics to runs/grpo-math/metrics.jsonl and, with --plot, a PNG of reward (and each component) over
GRPO steps. `eval/reward` is greedy accuracy on the `test` split, whose problems never occur in training.

    python examples/train_grpo_math.py --steps 120 --plot docs/grpo_math.png
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from grpo_math_recipe import ENV, ArithmeticGRPO, run_arithmetic_grpo

from palaestra.agents.client import AsyncClient
from palaestra.agents.metrics import MetricsLog, plot_metrics
from palaestra.agents.train_runs import server_address


async def train(recipe: ArithmeticGRPO, server: str | None, out: Path) -> float:
    log = MetricsLog(out, tensorboard=False)
    started = time.perf_counter()

    def report(metrics: dict[str, float]) -> None:
        log.log(int(metrics["step"]), metrics)
        if "warmup/steps" in metrics:
            print(
                f"warm-up: {metrics['warmup/steps']:.0f} supervised steps, "
                f"training-split accuracy {metrics['warmup/accuracy']:.2f}"
            )
        if "eval/reward" in metrics:
            print(
                f"step {metrics['step']:.0f}: test-split (unseen) reward {metrics['eval/reward']:.3f} "
                f"({time.perf_counter() - started:.0f}s)",
                flush=True,
            )

    with server_address(server) as address:
        async with AsyncClient(address) as client:
            trainer = await run_arithmetic_grpo(recipe, client, on_step=report)
            trainer.save(out / "final")
    log.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default=None, help="a running server (default: start one in-process)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/grpo-math"))
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    recipe = ArithmeticGRPO(steps=args.steps, seed=args.seed)
    seconds = asyncio.run(train(recipe, args.server, args.out))
    test = recipe.test_rewards()
    print(f"test-split reward: {test[0][1]:.3f} -> {test[-1][1]:.3f} ({seconds:.0f}s in all)")
    if args.plot:
        title = f"GRPO on {ENV}, difficulty 0 (tiny model, CPU), seed {args.seed}"
        print("plot:", plot_metrics(recipe.history, args.plot, title))


if __name__ == "__main__":
    main()
