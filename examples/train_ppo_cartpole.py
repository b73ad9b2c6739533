"""PPO on `gym/CartPole-v1` through a Palaestra server, on CPU.

Every vector step is one message to the server carrying the actions of all `--num-envs` episodes
(`RemoteVectorEnv`). The run stops early once the last 20 training episodes average >= 475; then the
greedy policy is evaluated on fresh episodes.

    python examples/train_ppo_cartpole.py                 # starts an in-process server
    python examples/train_ppo_cartpole.py --address 127.0.0.1:50051 --plot docs/ppo_cartpole.png
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np

from palaestra.agents.metrics import MetricsLog, plot_metrics, read_metrics
from palaestra.agents.ppo import PPO, PPOConfig
from palaestra.agents.train_runs import server_address
from palaestra.agents.vector import RemoteVectorEnv

TARGET = 475.0


class Solved(Exception):
    """Raised from the update callback to stop training once the target is reached."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", default=None, help="a running server (default: start one in-process)")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--total-steps", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/ppo-cartpole"))
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    log = MetricsLog(args.out, tensorboard=False)
    started = time.perf_counter()
    with server_address(args.address) as address:
        envs = RemoteVectorEnv(address, "gym/CartPole-v1", num_envs=args.num_envs)
        trainer = PPO(envs, PPOConfig(total_steps=args.total_steps, seed=args.seed))

        def on_update(stats: dict[str, float]) -> None:
            log.log(int(stats["step"]), stats)
            mean = stats["return_mean_20"]
            print(f"step {int(stats['step']):>7}: mean return (last 20) {mean:6.1f}", flush=True)
            if stats["return_mean_20"] >= TARGET:
                raise Solved

        with contextlib.suppress(Solved):
            trainer.train(on_update)
        seconds = time.perf_counter() - started
        greedy = trainer.evaluate(episodes=20, seed=12345)
        envs.close()
    log.log(trainer.global_step, {"eval/return_mean": float(np.mean(greedy))})
    log.close()
    recent = float(np.mean(trainer.episode_returns[-20:]))
    print(f"{trainer.global_step} steps in {seconds:.0f}s: last-20 training return {recent:.1f}")
    print(f"greedy evaluation, 20 episodes: mean return {np.mean(greedy):.1f}")
    if args.plot:
        plot_metrics(read_metrics(log.path), args.plot, "PPO on gym/CartPole-v1 through the server")


if __name__ == "__main__":
    main()
