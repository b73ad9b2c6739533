"""The flags of `palaestra train grpo ...` and `palaestra train ppo ...` (the runs: `train_runs`).

This module is imported whenever the `palaestra` command builds its parser, so it imports nothing heavy:
the handlers import `palaestra.agents.train_runs` (and it torch) only when a training command runs.

Both trainers write `metrics.jsonl` (one JSON object per step) and TensorBoard event files into
`--out`, show a progress bar, and with `--plot` draw reward and each reward component over steps into
`--out/training.png`. Without `--address` an in-process server with every installed plugin is started.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

ServeLocally = Callable[[Mapping[str, Any] | None], AbstractContextManager[str]]


def add_train_subcommands(commands: Any, serve_locally: ServeLocally) -> None:
    """`serve_locally(record)` starts the in-process server of a run without --address and yields its
    address (the `palaestra` command passes it: the trainers are clients and never import the server)."""
    train = commands.add_parser("train", help="train an agent against environments on a server")
    trainers = train.add_subparsers(title="trainers")
    add_grpo_parser(trainers.add_parser("grpo", help="GRPO for chat agents (LLMs)"))
    add_ppo_parser(trainers.add_parser("ppo", help="PPO for tensor-observation agents"))
    for trainer in trainers.choices.values():
        trainer.set_defaults(serve_locally=serve_locally)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="a running server host:port; several replicas host:port,host:port; or the replicas of a cluster "
        "directory:NAME (docs/deployment.md). Default: start one in-process",
    )
    parser.add_argument("--token", help="bearer token for the server at --address")
    parser.add_argument("--tls-ca", help="PEM root certificate: connect to --address over TLS")
    parser.add_argument("--env", required=True, help="environment id")
    parser.add_argument("--options", type=json.loads, default={}, help="open options as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="output directory")
    parser.add_argument("--plot", action="store_true", help="write a PNG of reward and components over steps")
    parser.add_argument("--no-tensorboard", action="store_true")
    parser.add_argument(
        "--store",
        help="record the run's episodes in this SQLite trajectory store (in-process server only; "
        "a server at --address records to its own [store])",
    )


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
        "--eval-options",
        type=json.loads,
        default=None,
        help='open options for evaluation, e.g. {"split": "test"}',
    )
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint directory to continue from")
    parser.set_defaults(handler=run_grpo)


def add_ppo_parser(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--total-steps", type=int, default=300_000)
    parser.add_argument("--num-steps", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2.5e-4)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument(
        "--checkpoint-every", type=int, default=0, help="save to OUT/checkpoint every N updates"
    )
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint directory to continue from")
    parser.set_defaults(handler=run_ppo)


def run_grpo(args: argparse.Namespace) -> int:
    _check_flags(args)
    from palaestra.agents.train_runs import run_grpo_command

    return run_grpo_command(args)


def run_ppo(args: argparse.Namespace) -> int:
    _check_flags(args)
    from palaestra.agents.train_runs import run_ppo_command

    return run_ppo_command(args)


def _check_flags(args: argparse.Namespace) -> None:
    if args.address and args.store:
        raise SystemExit(
            "palaestra train: --store records through the in-process server; "
            "a server at --address records to its own [store] table"
        )
    if not args.address and (args.token or args.tls_ca):
        raise SystemExit("--token and --tls-ca are for a server at --address")
