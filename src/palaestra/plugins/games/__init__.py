"""The games plugin: PettingZoo board games (tensors and text), an original negotiation game, self-play,
built-in opponents, multi-client matches, tournaments and ratings. See docs/games.md."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from palaestra import hookimpl
from palaestra.plugins.games.catalog import all_games
from palaestra.plugins.games.envs import build_env
from palaestra.plugins.games.tournament import leaderboard, run_tournament
from palaestra.registry import EnvRegistry

__all__ = ["leaderboard", "palaestra_register_environments", "run_tournament"]


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    for game in all_games(config):
        registry.add(game.spec, partial(build_env, game))
