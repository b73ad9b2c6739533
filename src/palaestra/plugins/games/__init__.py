"""The games plugin: PettingZoo board games (tensors and text), an original negotiation game, self-play,
built-in opponents, multi-client matches, tournaments and ratings. See docs/games.md."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from functools import partial
from typing import Any

from palaestra import hookimpl
from palaestra.env import EnvFactory
from palaestra.plugins.games.bots import random_bot
from palaestra.plugins.games.catalog import all_games, tensor_game
from palaestra.plugins.games.envs import build_env
from palaestra.plugins.games.tournament import leaderboard, run_tournament
from palaestra.registry import EnvRegistry
from palaestra.types import EnvSpec

__all__ = ["leaderboard", "palaestra_register_environments", "run_tournament"]


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    for game in all_games(config):
        registry.add(game.spec, partial(build_env, game))
    registry.add_resolver("pettingzoo/", partial(resolve_pettingzoo, config))


def resolve_pettingzoo(config: Mapping[str, Any], env_id: str) -> tuple[EnvSpec, EnvFactory] | None:
    """Any installed PettingZoo env by module path on first use, e.g. `pettingzoo/classic/go_v5`."""
    module = env_id.removeprefix("pettingzoo/")
    if importlib.util.find_spec(f"pettingzoo.{module.replace('/', '.')}") is None:
        return None
    plies = int(config.get("pettingzoo_max_plies", 1000))
    try:
        game = tensor_game(env_id, module, plies, f"PettingZoo {module}", {"random": random_bot})
    except Exception as exc:  # e.g. a missing optional dependency of that env
        raise ValueError(f"PettingZoo env {module} cannot be served: {exc}") from exc
    return game.spec, partial(build_env, game)
