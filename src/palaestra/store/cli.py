"""`palaestra store`: look at a trajectory store and export it.

palaestra store stats   --store trajectories.sqlite
palaestra store export  --store trajectories.sqlite --kind sft --out sft.parquet [--env-id ID] [--run-id ID]
palaestra store prune   --store trajectories.sqlite --max-age-days 30 --max-episodes 100000
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_store_subcommands(commands: Any) -> None:
    store = commands.add_parser("store", help="the trajectory store: stats, export, prune")
    sub = store.add_subparsers(title="store commands")

    stats = sub.add_parser("stats", help="episodes per environment, and runs")
    stats.add_argument("--store", required=True, help="the SQLite file")
    stats.set_defaults(handler=cmd_stats)

    export = sub.add_parser("export", help="write episodes, SFT records or preference pairs")
    export.add_argument("--store", required=True, help="the SQLite file")
    export.add_argument("--kind", choices=["episodes", "sft", "preferences"], default="episodes")
    export.add_argument("--out", required=True, help="a .parquet or .jsonl file, or a directory (datasets)")
    export.add_argument("--format", choices=["auto", "parquet", "jsonl", "datasets"], default="auto")
    export.add_argument("--env-id", help="only this environment")
    export.add_argument("--run-id", help="only episodes of this run")
    export.add_argument("--min-reward", type=float, help="sft: only episodes with at least this return")
    export.add_argument("--every-pair", action="store_true", help="preferences: every better/worse pair")
    export.set_defaults(handler=cmd_export)

    prune = sub.add_parser("prune", help="apply retention now")
    prune.add_argument("--store", required=True)
    prune.add_argument("--max-age-days", type=float, default=0.0)
    prune.add_argument("--max-episodes", type=int, default=0)
    prune.set_defaults(handler=cmd_prune)


def _open(path: str) -> Any:
    from pathlib import Path

    from palaestra.store.db import TrajectoryStore

    if not Path(path).is_file():
        raise SystemExit(f"no trajectory store at {path}")
    return TrajectoryStore(path)


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args.store) as store:
        print(json.dumps({"environments": store.environments(), "runs": store.runs()}, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from palaestra.store import export

    options: dict[str, Any] = {}
    if args.kind == "sft" and args.min_reward is not None:
        options["min_reward"] = args.min_reward
    if args.kind == "preferences" and args.every_pair:
        options["every_pair"] = True
    fmt = args.format
    if fmt == "auto":
        fmt = (
            "parquet"
            if args.out.endswith(".parquet")
            else "jsonl"
            if args.out.endswith(".jsonl")
            else "datasets"
        )
    with _open(args.store) as store:
        if fmt == "parquet":
            count = export.to_parquet(store, args.out, args.kind, args.env_id, args.run_id, **options)
        elif fmt == "jsonl":
            count = export.write_jsonl(
                export.records(store, args.kind, args.env_id, args.run_id, **options), args.out
            )
        else:
            dataset = export.to_dataset(store, args.kind, args.env_id, args.run_id, **options)
            dataset.save_to_disk(args.out)
            count = len(dataset)
    print(f"wrote {count} {args.kind} records to {args.out}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    with _open(args.store) as store:
        deleted = store.apply_retention(args.max_age_days, args.max_episodes)
    print(f"deleted {deleted} episodes")
    return 0
