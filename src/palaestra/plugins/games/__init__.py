"""The games plugin: PettingZoo board games (tensors and text), an original negotiation game, self-play,
built-in opponents, multi-client matches, tournaments and ratings. See docs/games.md.

It needs the `[games]` extra; without it the plugin declares itself unavailable (not a failure), so a
base install lists it as such and prints no import error.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Mapping
from functools import partial
from typing import Any

from palaestra.hookspecs import PluginUnavailable, ScriptedPolicy, hookimpl

_MISSING = [name for name in ("pettingzoo", "chess", "openskill") if importlib.util.find_spec(name) is None]
if _MISSING:
    raise PluginUnavailable(f"the games plugin needs {', '.join(_MISSING)}: pip install 'palaestra[games]'")

from palaestra.env import EnvFactory  # noqa: E402 - only once the extra is known to be there
from palaestra.plugins.games.bots import random_bot  # noqa: E402
from palaestra.plugins.games.catalog import all_games, tensor_game  # noqa: E402
from palaestra.plugins.games.envs import build_env  # noqa: E402
from palaestra.plugins.games.tournament import leaderboard, run_tournament  # noqa: E402
from palaestra.registry import EnvRegistry  # noqa: E402
from palaestra.types import EnvSpec, Observation  # noqa: E402

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


@hookimpl
def palaestra_scripted_policy(spec: EnvSpec, seed: int | None) -> ScriptedPolicy | None:
    """Self-play with legal moves (and haggling in barter) for the built-in games."""
    if not spec.id.startswith("games/"):
        return None
    from palaestra.plugins.games.reference import make_scripted_policy

    return make_scripted_policy(spec.id, seed)


@hookimpl
def palaestra_render_text(spec: EnvSpec, observation: Observation) -> str | None:
    """Boards of the games plugin's environments (built-in and PettingZoo) as text."""
    if not spec.id.startswith(("games/", "pettingzoo/")):
        return None
    from palaestra.plugins.games.reference import render_text

    return render_text(observation)


@hookimpl
def palaestra_cli_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from palaestra.plugins.games.cli import add_games_subcommands

    add_games_subcommands(commands)
