"""The served games: ids, specs, referees and bots.

* ``games/tictactoe``, ``games/connect4``, ``games/chess`` - tensors with action masks;
* ``games/tictactoe-text``, ``games/connect4-text``, ``games/chess-text`` - chat, for LLM agents;
* ``games/rps`` - rock-paper-scissors, simultaneous moves;
* ``games/barter-text`` - an original negotiation game with hidden values;
* ``pettingzoo/<family>/<module>`` - any installed PettingZoo AEC or parallel env, as tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from palaestra.plugins.games.barter import BarterReferee, scripted_trader
from palaestra.plugins.games.bots import BOTS, random_bot
from palaestra.plugins.games.engine import Game, has_action_mask, make_game, observation_box, to_space
from palaestra.plugins.games.envs import MAX_RETRIES, GameDef
from palaestra.plugins.games.referee import (
    DISCONNECT,
    ILLEGAL_MOVE,
    MOVE_TIMEOUT,
    OUTCOME,
    TENSOR_POLICY,
    TEXT_POLICY,
    BoardReferee,
    MovePolicy,
    Referee,
)
from palaestra.plugins.games.text import TEXT_RULES
from palaestra.types import (
    ChatSpace,
    DiscreteSpace,
    EnvKind,
    EnvSpec,
    RewardComponentSpec,
    RewardKind,
)

log = logging.getLogger("palaestra.games")

REWARD_SPECS = (
    RewardComponentSpec(OUTCOME, RewardKind.OUTCOME, "+1 win, -1 loss, 0 draw (or the game's own rewards)"),
    RewardComponentSpec(ILLEGAL_MOVE, RewardKind.PENALTY, "-1 per illegal or unparsable move", -1, 0),
    RewardComponentSpec(
        MOVE_TIMEOUT, RewardKind.PENALTY, "-1 when a seat forfeits by running out of time", -1, 0
    ),
    RewardComponentSpec(DISCONNECT, RewardKind.PENALTY, "-1 when a seat forfeits by disconnecting", -1, 0),
)


def _seconds(description: str) -> dict[str, Any]:
    return {"type": "number", "exclusiveMinimum": 0, "maximum": 3600, "description": description}


# The open options of every game (docs/games.md): how to play (self-play, a bot, a shared match), the
# illegal-move policy, the match clocks and the length limits.
OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "match_id": {"type": "string", "minLength": 1, "description": "join a shared match by its id"},
        "seat": {"type": "string", "minLength": 1, "description": "the seat (agent) to play"},
        "opponent": {"type": "string", "minLength": 1, "description": "a built-in bot to play against"},
        "illegal_move_retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
        "retry_penalty": {"type": "number", "minimum": 0, "maximum": 100, "description": "weight, >= 0"},
        "forfeit_penalty": {"type": "number", "minimum": 0, "maximum": 100, "description": "weight, >= 0"},
        "illegal_move": {"enum": ["reject", "penalise"]},
        "move_timeout_s": _seconds("seconds a seat has for its move in a match"),
        "disconnect_grace_s": _seconds("seconds a disconnected seat may take to come back"),
        "join_timeout_s": _seconds("seconds a match waits for its seats"),
        "max_plies": {"type": "integer", "minimum": 1, "maximum": 10_000},
        "max_turns": {"type": "integer", "minimum": 1, "maximum": 100},
    },
    # PettingZoo's convention (its api_test resets with {"options": 1}): other keys are ignored; the
    # known ones above are checked.
    "additionalProperties": True,
}

# name -> (PettingZoo module, ply limit, description)
BOARD_GAMES: dict[str, tuple[str, int, str]] = {
    "tictactoe": ("classic/tictactoe_v3", 9, "Tic-tac-toe (PettingZoo tictactoe_v3)"),
    "connect4": ("classic/connect_four_v3", 42, "Connect four (PettingZoo connect_four_v3)"),
    "chess": ("classic/chess_v6", 400, "Chess (PettingZoo chess_v6); a draw after the ply limit"),
}
DEFAULT_PETTINGZOO = ("classic/tictactoe_v3", "classic/connect_four_v3", "classic/chess_v6", "classic/rps_v2")


def _policy(options: Mapping[str, Any], default: MovePolicy) -> MovePolicy:
    return MovePolicy.from_options(options, default)


def _board_referee(
    module: str, max_plies: int, action_count: int, text: str | None, options: Mapping[str, Any]
) -> Referee:
    plies = int(options.get("max_plies", max_plies))
    game: Game = make_game(module, max(1, min(plies, max_plies)))
    rules = TEXT_RULES[text] if text else None
    return BoardReferee(game, action_count, _policy(options, TEXT_POLICY if text else TENSOR_POLICY), rules)


def _turn_kind(game: Game) -> EnvKind:
    return EnvKind.SIMULTANEOUS if game.simultaneous else EnvKind.TURN_BASED


def tensor_game(
    env_id: str, module: str, max_plies: int, description: str, bots: Mapping[str, Any]
) -> GameDef:
    """A PettingZoo game served as tensors (observation, action mask, discrete actions)."""
    probe = make_game(module, max_plies)
    raw = probe.raw
    agent = probe.agents[0]
    obs_space = raw.observation_space(agent)
    action_space = to_space(raw.action_space(agent))
    action_count = action_space.n if isinstance(action_space, DiscreteSpace) else 0
    tags = ["games", "multi-agent", "tensor"] + (["action_mask"] if has_action_mask(obs_space) else [])
    spec = EnvSpec(
        id=env_id,
        description=description,
        observation_space=observation_box(obs_space),
        action_space=action_space,
        kind=_turn_kind(probe),
        agents=probe.agents,
        reward_components=REWARD_SPECS,
        tags=tuple(tags),
        max_episode_steps=max_plies * (MAX_RETRIES + 1),
        options_schema=OPTIONS_SCHEMA,
    )
    make: Callable[[Mapping[str, Any]], Referee] = partial(
        _board_referee, module, max_plies, action_count, None
    )
    return GameDef(spec, make, bots)


def text_game(env_id: str, name: str, module: str, max_plies: int, description: str) -> GameDef:
    """A board game served as chat: readable board, legal moves in the game's notation, a move parser."""
    probe = make_game(module, max_plies)
    action_count = int(probe.raw.action_space(probe.agents[0]).n)
    spec = EnvSpec(
        id=env_id,
        description=f"{description}, as text: {TEXT_RULES[name].notation}",
        observation_space=ChatSpace(),
        action_space=ChatSpace(),
        kind=_turn_kind(probe),
        agents=probe.agents,
        reward_components=REWARD_SPECS,
        tags=("games", "multi-agent", "text"),
        max_episode_steps=max_plies * (MAX_RETRIES + 1),
        options_schema=OPTIONS_SCHEMA,
    )
    make: Callable[[Mapping[str, Any]], Referee] = partial(
        _board_referee, module, max_plies, action_count, name
    )
    return GameDef(spec, make, BOTS[name])


def _barter_referee(options: Mapping[str, Any]) -> Referee:
    return BarterReferee(_policy(options, TEXT_POLICY), max_turns=int(options.get("max_turns", 8)))


def barter_game() -> GameDef:
    max_turns = 8
    spec = EnvSpec(
        id="games/barter-text",
        description="Barter: negotiate a split of a market; each trader's values are private (original game)",
        observation_space=ChatSpace(),
        action_space=ChatSpace(),
        kind=EnvKind.TURN_BASED,
        agents=("player_1", "player_2"),
        reward_components=(
            RewardComponentSpec(OUTCOME, RewardKind.OUTCOME, "value of the goods you end up with / 10"),
            *REWARD_SPECS[1:],
        ),
        tags=("games", "multi-agent", "text", "negotiation", "hidden-information"),
        max_episode_steps=max_turns * (MAX_RETRIES + 1),
        options_schema=OPTIONS_SCHEMA,
    )
    return GameDef(spec, _barter_referee, {"scripted": scripted_trader}, default_bot="scripted")


def all_games(config: Mapping[str, Any]) -> list[GameDef]:
    """Every game this plugin serves, given its `[plugins.games]` config table."""
    games: list[GameDef] = []
    for name, (module, plies, description) in BOARD_GAMES.items():
        if name == "chess":
            plies = int(config.get("chess_max_plies", plies))
        games.append(tensor_game(f"games/{name}", module, plies, description, BOTS[name]))
        games.append(text_game(f"games/{name}-text", name, module, plies, description))
    games.append(
        tensor_game(
            "games/rps", "classic/rps_v2", 15, "Rock-paper-scissors, simultaneous", {"random": random_bot}
        )
    )
    games.append(barter_game())
    max_plies = int(config.get("pettingzoo_max_plies", 1000))
    for module in config.get("pettingzoo_envs", DEFAULT_PETTINGZOO):
        try:
            games.append(
                tensor_game(
                    f"pettingzoo/{module}", module, max_plies, f"PettingZoo {module}", {"random": random_bot}
                )
            )
        except Exception as exc:  # a missing optional dependency of one env must not hide the others
            log.warning("cannot serve PettingZoo env %s: %s", module, exc)
    return games
