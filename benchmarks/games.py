"""Games benchmark: full tic-tac-toe and connect-four matches per second, served over gRPC vs the same
PettingZoo games in-process, in the same run.

    python benchmarks/games.py [--seconds 3] [--batch 16] [--write]

Modes, per game (both seats played by a uniform random policy over the action mask):
- PettingZoo in-process: the plain `module.env()` AEC loop (the baseline);
- Palaestra referee in-process: the plugin's self-play environment without any transport;
- gRPC, one match at a time: `Client.open` + one `step` per move;
- gRPC, N matches per message: N self-play matches advanced together with `step_many`.
The server runs in this process on its own thread and event loop (loopback gRPC), like the other
benchmarks of this project. --write appends a `## Games` section to docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pettingzoo.classic import connect_four_v3, tictactoe_v3

from palaestra.agents.client import Client
from palaestra.env import EnvContext
from palaestra.plugins.games.envs import build_env
from palaestra.plugins.games.tournament import game_def
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig
from palaestra.types import Action, EpisodeStep

GAMES = {"games/tictactoe": tictactoe_v3, "games/connect4": connect_four_v3}


def pick(mask: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(mask)))


def timed(run_one: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Run matches until `seconds` pass; returns (matches/s, moves/s)."""
    run_one()  # warm up
    matches = moves = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        moves += run_one()
        matches += 1
    elapsed = time.perf_counter() - start
    return matches / elapsed, moves / elapsed


def pettingzoo_match(module: object, rng: np.random.Generator) -> Callable[[], int]:
    env = module.env()  # type: ignore[attr-defined]

    def run() -> int:
        env.reset()
        moves = 0
        for _agent in env.agent_iter():
            observation, _, terminated, truncated, _ = env.last()
            env.step(None if terminated or truncated else pick(observation["action_mask"], rng))
            moves += 1
        return moves

    return run


def referee_match(env_id: str, rng: np.random.Generator) -> Callable[[], int]:
    env = build_env(game_def(env_id), EnvContext(env_id, "bench"))

    def run() -> int:
        result = env.reset(seed=None)
        moves = 0
        while not result.done:
            seat = result.next_agent
            mask = result.agents[seat].observation.action_mask
            assert mask is not None
            result = env.step({seat: Action(discrete=pick(mask, rng))})  # type: ignore[arg-type]
            moves += 1
        return moves

    return run


def grpc_match(client: Client, env_id: str, rng: np.random.Generator) -> Callable[[], int]:
    def run() -> int:
        step = client.open(env_id)[0]
        moves = 0
        while not step.done:
            mask = step.agents[step.next_agent].observation.action_mask
            assert mask is not None
            step = client.step(step.episode_id, {step.next_agent: pick(mask, rng)})
            moves += 1
        client.close(step.episode_id)
        return moves

    return run


def grpc_batched(client: Client, env_id: str, batch: int, rng: np.random.Generator) -> Callable[[], int]:
    """`batch` matches advanced together; returns moves, and counts as `batch` matches via the caller."""

    def run() -> int:
        live: dict[str, EpisodeStep] = {s.episode_id: s for s in client.open(env_id, count=batch)}
        moves = 0
        ids = list(live)
        while live:
            actions = {}
            for episode_id, step in live.items():
                mask = step.agents[step.next_agent].observation.action_mask
                assert mask is not None
                actions[episode_id] = {step.next_agent: pick(mask, rng)}
            replies = client.step_many(actions)
            moves += len(actions)
            live = {i: s for i, s in replies.items() if isinstance(s, EpisodeStep) and not s.done}
        client.close(ids)
        return moves

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, float, float]] = []
    with ServerThread(ServerConfig(port=0, idle_timeout_s=600)) as server, Client(server.address) as client:
        for env_id, module in GAMES.items():
            base, base_moves = timed(pettingzoo_match(module, rng), args.seconds)
            rows.append((env_id, "PettingZoo in-process (baseline)", base, base_moves))
            local = timed(referee_match(env_id, rng), args.seconds)
            rows.append((env_id, "Palaestra referee in-process", *local))
            single = timed(grpc_match(client, env_id, rng), args.seconds)
            rows.append((env_id, "gRPC, one match at a time", *single))
            batched, batched_moves = timed(grpc_batched(client, env_id, args.batch, rng), args.seconds)
            mode = f"gRPC, {args.batch} matches per step_many"
            rows.append((env_id, mode, batched * args.batch, batched_moves))
    lines = ["| game | mode | matches/s | moves/s | vs in-process PettingZoo |", "|---|---|---|---|---|"]
    baselines = {r[0]: r[2] for r in rows if "baseline" in r[1]}
    for env_id, mode, matches, moves in rows:
        ratio = matches / baselines[env_id]
        lines.append(f"| {env_id} | {mode} | {matches:,.0f} | {moves:,.0f} | {ratio:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        section = (
            "\n\n## Games\n\n"
            "`python benchmarks/games.py --write`: full self-play matches, both seats random over the "
            f"action mask, {args.seconds:g} s per mode; the server runs in the same process on its own "
            f"thread and event loop (loopback gRPC). {platform.python_version()}, {os.cpu_count()} CPUs.\n\n"
            f"{table}\n\n"
            "One gRPC match at a time pays a round trip per move; batching matches per message amortises "
            "it. PettingZoo's moves/s include its final None steps.\n"
        )
        with Path(__file__).resolve().parent.parent.joinpath("docs", "performance.md").open("a") as out:
            out.write(section)


if __name__ == "__main__":
    main()
