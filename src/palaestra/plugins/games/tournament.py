"""Tournaments and ratings.

`run_tournament` plays round-robin or Swiss tournaments among players - built-in bots (by name) or
client policies (any callable) - records every game as one JSON line, and returns the leaderboard.
`leaderboard` rebuilds ratings (OpenSkill, Plackett-Luce) from such a results file, so a leaderboard is
always a pure function of the recorded games.

Games run in-process through the same referee the server uses. A policy that lives elsewhere (an LLM,
a remote trainer) joins by wrapping its call in a callable.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from openskill.models import PlackettLuce

from palaestra.plugins.games.envs import GameDef
from palaestra.plugins.games.referee import OUTCOME, merge
from palaestra.types import Action, AgentResult

# policy(seat, news for that seat since its last move) -> its action
Policy = Callable[[str, AgentResult], Action]


@cache
def game_def(env_id: str) -> GameDef:
    """The served definition of a game id (as registered with an empty plugin config)."""
    from palaestra.plugins.games.catalog import all_games

    for game in all_games({"pettingzoo_envs": []}):
        if game.spec.id == env_id:
            return game
    raise KeyError(f"unknown game {env_id!r}")


@dataclass
class GameRecord:
    env_id: str
    seed: int
    seats: dict[str, str]  # seat -> player name
    scores: dict[str, float]  # player name -> outcome (+1 / 0 / -1 for board games)
    reason: str
    round: int = 0
    tournament: str = ""
    time: float = field(default_factory=time.time)

    def as_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def play_game(game: GameDef, seats: Mapping[str, Policy | str], seed: int) -> tuple[dict[str, float], str]:
    """Play one game; `seats` maps each seat to a policy or a bot name. Returns each seat's outcome."""
    referee = game.make_referee({})
    rng = random.Random(seed)
    update = referee.start(seed)
    news: dict[str, AgentResult] = {}
    outcome = dict.fromkeys(referee.agents, 0.0)
    reason = ""
    while True:
        for seat, result in update.results.items():
            news[seat] = merge(news[seat], result) if seat in news else result
            outcome[seat] += sum(c.value for c in result.components if c.name == OUTCOME)
            reason = str(result.info.get("reason", reason))
        if update.over:
            return outcome, reason
        seat = update.to_act[0]
        player = seats[seat]
        if isinstance(player, str):
            update = referee.bot_act(seat, game.bots[player], rng)
        else:
            update = referee.act({seat: player(seat, news.pop(seat, AgentResult()))})


def _pairings_round_robin(names: Sequence[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(names, 2))


def _pairings_swiss(
    names: Sequence[str], points: Mapping[str, float], met: set[frozenset[str]]
) -> list[tuple[str, str]]:
    """Pair neighbours in the standings, avoiding rematches where possible; an odd one out rests."""
    order = sorted(names, key=lambda n: (-points.get(n, 0.0), n))
    pairs: list[tuple[str, str]] = []
    while len(order) >= 2:
        first = order.pop(0)
        partner = next((n for n in order if frozenset((first, n)) not in met), order[0])
        order.remove(partner)
        pairs.append((first, partner))
    return pairs


def run_tournament(
    env_id: str,
    players: Mapping[str, Policy | str],
    *,
    pairing: str = "round_robin",
    rounds: int = 1,
    results_path: str | Path | None = None,
    seed: int = 0,
    name: str = "",
    game: GameDef | None = None,
) -> list[dict[str, Any]]:
    """Play a tournament of `env_id` (a two-seat game) and return its leaderboard.

    players: name -> a built-in bot name (e.g. "random", "minimax") or a policy
        ``policy(seat, news: AgentResult) -> Action`` (news: the seat's observation and rewards since its
        last move).
    pairing: "round_robin" (every pair meets once per round) or "swiss" (neighbours in the standings meet,
        avoiding rematches). Every pairing plays two games, each player taking each seat once.
    rounds: how many times the pairing is repeated.
    results_path: JSONL file the games are appended to (one `GameRecord` per line); ratings are computed
        from the games of this call (and the file's earlier games, if it had any).
    game: the game's definition, for games served by other plugins (TextArena's `textarena_game(env_id)`);
        default: the games plugin's own `env_id`.
    Returns `leaderboard(...)` over the recorded games.
    """
    if pairing not in ("round_robin", "swiss"):
        raise ValueError(f"pairing must be 'round_robin' or 'swiss', not {pairing!r}")
    game = game or game_def(env_id)
    if len(game.spec.agents) != 2:
        raise ValueError(f"{env_id} has {len(game.spec.agents)} seats; tournaments need two-seat games")
    names = sorted(players)
    records: list[GameRecord] = []
    points: dict[str, float] = dict.fromkeys(names, 0.0)
    met: set[frozenset[str]] = set()
    game_seed = seed
    for round_index in range(rounds):
        if pairing == "round_robin":
            pairs = _pairings_round_robin(names)
        else:
            pairs = _pairings_swiss(names, points, met)
        for a, b in pairs:
            met.add(frozenset((a, b)))
            for first, second in ((a, b), (b, a)):
                seats = dict(zip(game.spec.agents, (first, second), strict=True))
                outcome, reason = play_game(game, {seat: players[p] for seat, p in seats.items()}, game_seed)
                scores = {seats[seat]: value for seat, value in outcome.items()}
                for player, value in scores.items():
                    points[player] += 1.0 if value > 0 else 0.5 if value == 0 else 0.0
                records.append(GameRecord(env_id, game_seed, seats, scores, reason, round_index, name))
                game_seed += 1
    if results_path is not None:
        path = Path(results_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.writelines(record.as_json() + "\n" for record in records)
        return leaderboard(path, env_id=env_id)
    return ratings(records)


def read_results(path: str | Path) -> list[GameRecord]:
    records = []
    with Path(path).open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                records.append(GameRecord(**json.loads(line)))
    return records


def leaderboard(results_path: str | Path, env_id: str | None = None) -> list[dict[str, Any]]:
    """Ratings from a results JSONL file, best first.

    Each row: name, mu, sigma, ordinal (mu - 3 sigma, the sort key), games, wins, draws, losses.
    env_id: only games of this environment (default: all games in the file).
    """
    records = [r for r in read_results(results_path) if env_id is None or r.env_id == env_id]
    return ratings(records)


def ratings(records: Iterable[GameRecord]) -> list[dict[str, Any]]:
    """OpenSkill (Plackett-Luce) ratings from game records, best first; rows as in `leaderboard`."""
    model = PlackettLuce()
    rated: dict[str, Any] = {}
    tally: dict[str, dict[str, int]] = {}
    for record in sorted(records, key=lambda r: r.time):
        names = list(record.scores)
        for n in names:
            rated.setdefault(n, model.rating(name=n))
            tally.setdefault(n, {"games": 0, "wins": 0, "draws": 0, "losses": 0})
            score = record.scores[n]
            tally[n]["games"] += 1
            tally[n]["wins" if score > 0 else "draws" if score == 0 else "losses"] += 1
        # openskill ranks: lower is better; equal ranks are a draw
        ranks = [-record.scores[n] for n in names]
        updated = model.rate([[rated[n]] for n in names], ranks=ranks)
        for n, team in zip(names, updated, strict=True):
            rated[n] = team[0]
    rows = [
        {"name": n, "mu": r.mu, "sigma": r.sigma, "ordinal": r.ordinal(), **tally[n]}
        for n, r in rated.items()
    ]
    return sorted(rows, key=lambda row: -row["ordinal"])


def format_leaderboard(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of `leaderboard` rows, for the CLI."""
    lines = [f"{'#':>3}  {'player':<24} {'rating':>7} {'mu':>7} {'sigma':>6} {'games':>5}   W/D/L"]
    for i, row in enumerate(rows, 1):
        lines.append(
            f"{i:>3}  {row['name']:<24} {row['ordinal']:>7.2f} {row['mu']:>7.2f} {row['sigma']:>6.2f} "
            f"{row['games']:>5}   {row['wins']}/{row['draws']}/{row['losses']}"
        )
    return "\n".join(lines)
