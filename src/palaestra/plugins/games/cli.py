"""`palaestra games tournament` and `palaestra games leaderboard`."""

from __future__ import annotations

import argparse
from typing import Any

from palaestra.plugins.games.tournament import format_leaderboard, leaderboard, run_tournament

DEFAULT_RESULTS = "runs/games/results.jsonl"


def add_games_subcommands(commands: Any) -> None:
    games = commands.add_parser("games", help="tournaments and ratings for the games plugin")
    sub = games.add_subparsers(title="games commands")

    tournament = sub.add_parser("tournament", help="play a tournament among built-in bots and record it")
    tournament.add_argument("env_id", help="a two-seat game, e.g. games/tictactoe or games/connect4")
    tournament.add_argument(
        "--player",
        action="append",
        required=True,
        metavar="NAME=BOT",
        help="a player and its bot (repeatable)",
    )
    tournament.add_argument("--pairing", choices=["round_robin", "swiss"], default="round_robin")
    tournament.add_argument("--rounds", type=int, default=1)
    tournament.add_argument("--results", default=DEFAULT_RESULTS, help="JSONL file the games are appended to")
    tournament.add_argument("--seed", type=int, default=0)
    tournament.set_defaults(handler=cmd_tournament)

    board = sub.add_parser("leaderboard", help="ratings (OpenSkill) from a results file")
    board.add_argument("--results", default=DEFAULT_RESULTS)
    board.add_argument("--env", default=None, help="only games of this environment")
    board.set_defaults(handler=cmd_leaderboard)


def cmd_tournament(args: argparse.Namespace) -> int:
    players: dict[str, str] = {}
    for spec in args.player:
        name, _, bot = spec.partition("=")
        players[name] = bot or name
    rows = run_tournament(
        args.env_id,
        players,
        pairing=args.pairing,
        rounds=args.rounds,
        results_path=args.results,
        seed=args.seed,
    )
    print(format_leaderboard(rows))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    print(format_leaderboard(leaderboard(args.results, env_id=args.env)))
    return 0
