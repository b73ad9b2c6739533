"""`palaestra cluster up|status|drain|remove|down`: replicas on a running Ray cluster.

The commands connect to the cluster as a Ray client driver (`--ray-address`, default `auto`: the cluster
this machine belongs to). `up` makes the directory and the replicas *detached* actors, so they outlive the
command; `down` stops them. Ray is imported only when a command runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from palaestra.cluster import DIRECTORY_NAME, NAMESPACE


def add_cluster_subcommands(commands: Any) -> None:
    cluster = commands.add_parser("cluster", help="server replicas on a Ray cluster: up, status, drain, down")
    sub = cluster.add_subparsers(title="cluster commands")

    up = sub.add_parser("up", help="start one replica per alive node (and the directory)")
    _common(up)
    up.add_argument("--config", help="the TOML configuration each replica loads (a path on every node)")
    up.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the replicas bind; 'node': each node's own IP (for clients elsewhere)",
    )
    up.add_argument("--max-episodes", type=int, help="override [server] max_episodes per replica")
    up.add_argument("--max-restarts", type=int, default=3, help="Ray restarts of a dead replica (-1: always)")
    up.add_argument("--num-cpus", type=float, default=0, help="CPUs each replica reserves in Ray")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the replicas")
    up.set_defaults(handler=cmd_up)

    status = sub.add_parser("status", help="the replicas: address, capacity, health")
    _common(status)
    status.add_argument("--json", action="store_true", help="print the directory's snapshot as JSON")
    status.set_defaults(handler=cmd_status)

    drain = sub.add_parser(
        "drain", help="no new episodes on a replica (its server refuses opens; its open episodes go on)"
    )
    _common(drain)
    drain.add_argument("replica", help="a replica id from `status`")
    drain.set_defaults(handler=cmd_drain)

    remove = sub.add_parser("remove", help="drain a replica, wait for its episodes, stop it")
    _common(remove)
    remove.add_argument("replica")
    remove.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for its episodes")
    remove.set_defaults(handler=cmd_remove)

    down = sub.add_parser("down", help="stop every replica and the directory")
    _common(down)
    down.set_defaults(handler=cmd_down)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray-address", default="auto", help="the Ray cluster (GCS address, or auto)")
    parser.add_argument("--namespace", default=NAMESPACE, help="Ray namespace of the replicas")
    parser.add_argument("--directory", default=DIRECTORY_NAME, help="name of the directory actor")


def _connect(args: argparse.Namespace) -> Any:
    import ray

    from palaestra.cluster.api import ClusterError, RayCluster

    try:
        ray.init(address=args.ray_address, namespace=args.namespace, log_to_driver=False)
    except ConnectionError as exc:
        raise ClusterError(
            f"no Ray cluster at --ray-address {args.ray_address} ({exc}); start one (`ray start --head`) "
            "or name it with --ray-address / RAY_ADDRESS"
        ) from None
    return RayCluster(args.namespace, args.directory)


def _print(snapshot: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "replica",
        "address",
        "healthy",
        "draining",
        "open",
        "free slots",
        "free sandboxes",
        "opened",
        "restarts",
    )
    for e in snapshot:
        table.add_row(
            e["replica_id"],
            e["address"],
            "yes" if e["healthy"] else f"no ({e['age_s']:.1f} s silent)",
            "yes" if e["draining"] else "no",
            str(e["open_episodes"]),
            str(e["free_episodes"]),
            str(e["free_sandboxes"]),
            str(e["opened"]),
            str(e["incarnation"]),
        )
    Console().print(table)


def _run(args: argparse.Namespace, action: Any) -> int:
    try:
        import ray
    except ImportError:
        print("palaestra cluster needs Ray: pip install 'palaestra[ray]'", file=sys.stderr)
        return 2

    from palaestra.cluster.api import ClusterError

    try:
        return int(action(_connect(args)))
    except ClusterError as exc:
        print(f"palaestra cluster: {exc}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()


def cmd_up(args: argparse.Namespace) -> int:
    overrides = {} if args.max_episodes is None else {"max_episodes": args.max_episodes}

    def up(cluster: Any) -> int:
        snapshot = cluster.up(
            host=args.host,
            config_path=args.config,
            overrides=overrides,
            num_cpus=args.num_cpus,
            max_restarts=args.max_restarts,
            detached=True,
            timeout_s=args.timeout,
        )
        _print(snapshot)
        return 0

    return _run(args, up)


def cmd_status(args: argparse.Namespace) -> int:
    def status(cluster: Any) -> int:
        snapshot = cluster.status()
        if args.json:
            print(json.dumps(snapshot, indent=2))
        else:
            _print(snapshot)
        return 0

    return _run(args, status)


def cmd_drain(args: argparse.Namespace) -> int:
    return _run(args, lambda cluster: cluster.drain(args.replica) or 0)


def cmd_remove(args: argparse.Namespace) -> int:
    return _run(args, lambda cluster: cluster.remove(args.replica, timeout_s=args.timeout) or 0)


def cmd_down(args: argparse.Namespace) -> int:
    return _run(args, lambda cluster: cluster.down() or 0)
