"""Running a training job from the command line: `palaestra train ppo` and `palaestra train grpo`.

Heavy imports (torch, transformers) happen inside the functions. Each run writes metrics through
`palaestra.agents.metrics` and, without --address, starts an in-process server for itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from palaestra.agents.metrics import MetricsLog, plot_metrics, read_metrics
from palaestra.pluginmanager import Plugins, client_plugins


def client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """--token and --tls-ca as client keyword arguments."""
    return {"token": args.token, "tls_root_cert": args.tls_ca}


def store_run(args: argparse.Namespace, kind: str, model: str) -> dict[str, Any] | None:
    """--store as the in-process server's run record: kind, model and the run's settings as tags."""
    if not getattr(args, "store", None):
        return None
    tags = {"env": args.env, "seed": args.seed, "out": str(args.out)}
    return {"path": args.store, "kind": kind, "model": model, "tags": tags}


@contextlib.contextmanager
def server_address(args: argparse.Namespace, record: Mapping[str, Any] | None = None) -> Iterator[str]:
    """--address, or an in-process server started for the run by `args.serve_locally` (given by the
    `palaestra` command: the trainers are clients and never import the server themselves).
    `record` ({"path", "kind", "model", "tags"}) makes that server record every episode as the run's."""
    if args.address:
        yield args.address
        return
    with args.serve_locally(record) as address:
        yield address


# ---------------------------------------------------------------- PPO


def run_ppo_command(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from palaestra.agents.ppo import PPO, PPOConfig
    from palaestra.agents.vector import RemoteVectorEnv

    log = MetricsLog(args.out, tensorboard=not args.no_tensorboard)
    config = PPOConfig(
        total_steps=args.total_steps, num_steps=args.num_steps, learning_rate=args.lr, seed=args.seed
    )
    with server_address(args, store_run(args, "train-ppo", "mlp")) as address:
        envs = RemoteVectorEnv(
            address, args.env, num_envs=args.num_envs, options=args.options, **client_kwargs(args)
        )
        try:
            trainer = PPO(envs, config)
            if args.resume is not None:
                trainer.resume(args.resume)
            with tqdm(total=args.total_steps, unit="step", desc="ppo", initial=trainer.global_step) as bar:

                def on_update(stats: dict[str, float]) -> None:
                    bar.update(int(stats["step"]) - bar.n)
                    bar.set_postfix(ret=f"{stats['return_mean_20']:.1f}")
                    log.log(int(stats["step"]), stats)

                # A server restart drops the rollout in flight and reopens the envs (see PPO.train).
                trainer.train(
                    on_update,
                    checkpoint_dir=args.out / "checkpoint" if args.checkpoint_every else None,
                    checkpoint_every=args.checkpoint_every,
                )
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


def load_policy_model(name: str, seed: int, *, vllm: bool = False) -> tuple[Any, Any]:
    """A local checkpoint (never downloaded) or the built-in random "tiny" model. `vllm`: the tiny model
    with two heads of 32, since vLLM's CPU attention has no kernels for the default head size of 16."""
    if name == "tiny":
        from palaestra.agents.tiny import build_model, build_tokenizer

        tiny = build_tokenizer()
        return build_model(tiny, seed=seed, **({"heads": 2} if vllm else {})), tiny
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(name, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(name, local_files_only=True), tokenizer


def engine_checkpoint(name: str, model: Any, tokenizer: Any, out: Path) -> str:
    """A directory a generation engine can load: the model's own, or for the built-in tiny model (which
    exists only in memory) its initial weights saved under the run's output folder."""
    if name != "tiny":
        return name
    directory = Path(out) / "tiny-initial"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


async def scripted_examples(
    client: Any,
    env_id: str,
    options: Mapping[str, Any],
    count: int,
    seed: int,
    plugins: Plugins | None = None,
) -> list[Any]:
    """(opening messages, reply) pairs from a plugin's scripted agent (`palaestra_scripted_policy`), for
    warm-up. `plugins`: the client-side plugins (default: every installed one)."""
    from palaestra.agents.policies import scripted_policy

    spec = await client.describe(env_id)
    policy = scripted_policy(plugins if plugins is not None else client_plugins(), spec, seed)
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

    model, tokenizer = load_policy_model(args.model, args.seed, vllm=args.backend == "vllm")
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

        backend = VLLMBackend(engine_checkpoint(args.model, model, tokenizer, args.out), seed=args.seed)
    log = MetricsLog(args.out, tensorboard=not args.no_tensorboard)
    with server_address(args, store_run(args, "train-grpo", str(args.model))) as address:
        async with AsyncClient(address, **client_kwargs(args)) as client:
            trainer = GRPOTrainer(model, tokenizer, client, config, backend=backend)
            if args.resume:
                trainer.resume(args.resume)
            elif args.warmup_steps:
                examples = await scripted_examples(
                    client, args.env, args.options, args.warmup_examples, args.seed, args.plugins
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
