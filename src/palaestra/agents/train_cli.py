"""`palaestra train grpo ...` and `palaestra train ppo ...`.

This module is imported whenever the `palaestra` command builds its parser, so it imports nothing heavy
at module level: torch and transformers are imported inside the handlers (`palaestra serve` must never
load torch).

Both trainers write `metrics.jsonl` (one JSON object per step) and TensorBoard event files into
`--out`, show a progress bar, and with `--plot` draw reward and each reward component over steps into
`--out/training.png`. Without `--server` an in-process server with every installed plugin is started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


def add_train_subcommands(commands: Any) -> None:
    train = commands.add_parser("train", help="train an agent against environments on a server")
    trainers = train.add_subparsers(title="trainers")
    add_grpo_parser(trainers.add_parser("grpo", help="GRPO for chat agents (LLMs)"))
    add_ppo_parser(trainers.add_parser("ppo", help="PPO for tensor-observation agents"))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help="server address host:port (default: start one in-process)")
    parser.add_argument("--env", required=True, help="environment id")
    parser.add_argument("--options", type=json.loads, default={}, help="open options as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="output directory")
    parser.add_argument("--plot", action="store_true", help="write a PNG of reward and components over steps")
    parser.add_argument("--no-tensorboard", action="store_true")


def add_grpo_parser(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--model", default="tiny", help="'tiny' (built in code) or a local model directory")
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--tasks-per-step", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-context", type=int, default=1024)
    parser.add_argument("--kl-beta", type=float, default=0.0)
    parser.add_argument("--epochs-per-batch", type=int, default=1)
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--kind-weights", type=json.loads, default={}, help='e.g. {"process": 0.5}')
    parser.add_argument(
        "--gate", type=float, default=None, help="gated accumulation threshold on the outcome"
    )
    parser.add_argument(
        "--warmup-steps", type=int, default=0, help="supervised steps on the scripted agent's replies"
    )
    parser.add_argument("--warmup-examples", type=int, default=512)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-tasks", type=int, default=32)
    parser.add_argument(
        "--eval-options", type=json.loads, default=None, help="open options for held-out evaluation"
    )
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint directory to continue from")
    parser.set_defaults(handler=run_grpo_command)


def add_ppo_parser(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--total-steps", type=int, default=300_000)
    parser.add_argument("--num-steps", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2.5e-4)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.set_defaults(handler=run_ppo_command)


# ---------------------------------------------------------------- metrics


class MetricsLog:
    """metrics.jsonl plus (optionally) TensorBoard scalars."""

    def __init__(self, out: Path, tensorboard: bool = True) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.jsonl"
        self.file = self.path.open("a")
        self.writer: Any = None
        if tensorboard:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_metrics(rows: Sequence[Mapping[str, float]], png: Path, title: str) -> Path:
    """One panel for rewards (train and held-out), one for each reward component's mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        return [p[0] for p in points], [p[1] for p in points]

    keys = sorted({k for r in rows for k in r})
    rewards = [k for k in keys if k.endswith("reward") or k.startswith("return")]
    components = [k for k in keys if "/component/" in k]
    panels = 2 if components else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    for key in rewards:
        axes[0][0].plot(*series(key), label=key, marker="." if key.startswith("eval") else None)
    axes[0][0].set(title=title, xlabel="step", ylabel="reward")
    axes[0][0].legend(fontsize=8)
    if components:
        for key in components:
            axes[0][1].plot(*series(key), label=key)
        axes[0][1].set(title="reward components (mean per episode)", xlabel="step")
        axes[0][1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png


@contextlib.contextmanager
def server_address(address: str | None) -> Iterator[str]:
    """The given address, or an in-process server started for the run."""
    if address:
        yield address
        return
    from palaestra.server.app import ServerThread
    from palaestra.server.config import ServerConfig

    with ServerThread(ServerConfig(port=0)) as thread:
        yield thread.address


# ---------------------------------------------------------------- PPO


def run_ppo_command(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from palaestra.agents.gym import RemoteVectorEnv
    from palaestra.agents.ppo import PPO, PPOConfig

    log = MetricsLog(args.out, tensorboard=not args.no_tensorboard)
    config = PPOConfig(
        total_steps=args.total_steps, num_steps=args.num_steps, learning_rate=args.lr, seed=args.seed
    )
    with server_address(args.server) as address:
        envs = RemoteVectorEnv(address, args.env, num_envs=args.num_envs, options=args.options)
        try:
            trainer = PPO(envs, config)
            with tqdm(total=args.total_steps, unit="step", desc="ppo") as bar:

                def on_update(stats: dict[str, float]) -> None:
                    bar.update(int(stats["step"]) - bar.n)
                    bar.set_postfix(ret=f"{stats['return_mean_20']:.1f}")
                    log.log(int(stats["step"]), stats)

                trainer.train(on_update)
            greedy = trainer.evaluate(args.eval_episodes, seed=args.seed + 10_000)
        finally:
            envs.close()
    log.log(trainer.global_step, {"eval/return_mean": float(np.mean(greedy))})
    log.close()
    print(f"greedy evaluation over {len(greedy)} episodes: mean return {np.mean(greedy):.1f}")
    if args.plot:
        print("plot:", plot_metrics(read_metrics(log.path), args.out / "training.png", f"PPO on {args.env}"))
    return 0


# ---------------------------------------------------------------- GRPO


def run_grpo_command(args: argparse.Namespace) -> int:
    return asyncio.run(_grpo(args))


def load_policy_model(name: str, seed: int) -> tuple[Any, Any]:
    if name == "tiny":
        from palaestra.agents.tiny import build_model, build_tokenizer

        tiny = build_tokenizer()
        return build_model(tiny, seed=seed), tiny
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(name, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(name, local_files_only=True), tokenizer


async def scripted_examples(
    client: Any, env_id: str, options: Mapping[str, Any], count: int, seed: int
) -> list[Any]:
    """(opening messages, reply) pairs from the environment plugin's scripted agent, for warm-up."""
    from palaestra.agents.policies import scripted_policy

    spec = await client.describe(env_id)
    policy = scripted_policy(spec, seed)
    if policy is None:
        raise SystemExit(f"--warmup-steps needs a scripted agent for {env_id}; none is offered")
    examples = []
    for index in range(count):
        [step] = await client.open(env_id, seed=seed * 100_003 + index, options=dict(options))
        action = next(iter(policy(step).values()))
        examples.append((list(step.result.observation.messages), action.as_text()))
        await client.close([step.episode_id])
    return examples


async def _grpo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from palaestra.agents.client import AsyncClient
    from palaestra.agents.grpo import GRPOConfig, GRPOTrainer
    from palaestra.agents.sft import supervised_warmup

    model, tokenizer = load_policy_model(args.model, args.seed)
    config = GRPOConfig(
        env_id=args.env,
        group_size=args.group_size,
        tasks_per_step=args.tasks_per_step,
        task_options=dict(args.options),
        eval_options=args.eval_options,
        eval_tasks=args.eval_tasks,
        learning_rate=args.lr,
        kl_beta=args.kl_beta,
        epochs_per_batch=args.epochs_per_batch,
        micro_batch_size=args.micro_batch_size,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        max_turns=args.max_turns,
        max_context=args.max_context,
        kind_weights=dict(args.kind_weights),
        gate=args.gate,
        seed=args.seed,
    )
    backend = None
    if args.backend == "vllm":
        from palaestra.agents.generation import VLLMBackend

        backend = VLLMBackend(args.model, seed=args.seed)
    log = MetricsLog(args.out, tensorboard=not args.no_tensorboard)
    with server_address(args.server) as address:
        async with AsyncClient(address) as client:
            trainer = GRPOTrainer(model, tokenizer, client, config, backend=backend)
            if args.resume:
                trainer.resume(args.resume)
            elif args.warmup_steps:
                examples = await scripted_examples(
                    client, args.env, args.options, args.warmup_examples, args.seed
                )
                losses = supervised_warmup(
                    model, trainer.codec, examples, steps=args.warmup_steps, seed=args.seed
                )
                print(f"warm-up: {len(examples)} examples, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
                trainer.backend.load_weights(model)
            log.log(trainer.step, await trainer.evaluate())
            with tqdm(total=args.steps, initial=trainer.step, unit="step", desc="grpo") as bar:
                while trainer.step < args.steps:
                    metrics = await trainer.train_step()
                    if trainer.step % args.eval_every == 0 or trainer.step == args.steps:
                        metrics |= await trainer.evaluate()
                    if args.checkpoint_every and trainer.step % args.checkpoint_every == 0:
                        trainer.save(args.out / f"checkpoint-{trainer.step}")
                    log.log(trainer.step, metrics)
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics['train/reward']:.3f}")
            trainer.save(args.out / "final")
    log.close()
    if args.plot:
        print("plot:", plot_metrics(read_metrics(log.path), args.out / "training.png", f"GRPO on {args.env}"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="palaestra")
    add_train_subcommands(parser.add_subparsers(title="commands"))
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    result: int = args.handler(args)
    return result
