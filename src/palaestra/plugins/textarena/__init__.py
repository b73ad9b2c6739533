"""The TextArena plugin: TextArena's games as `ta/<game id>` (e.g. `ta/TicTacToe-v0`, `ta/GuessTheNumber-v0`),
resolved on first use. Needs the `[textarena]` and `[games]` extras; without them it is unavailable.

Each game is served through the games plugin's machinery (docs/games.md): a `TextArenaReferee` drives the
TextArena environment, so the same id plays as self-play (no options: one client moves for every seat), or
as one seat of a multi-client match (`{"match_id": ..., "seat": "player_1"}`), and two-seat games are
rated by `run_tournament(..., game=textarena_game(env_id))` (OpenSkill). A single-player game has one seat,
`player_0`. `ta/<game id>` is the game with the fewest players it accepts; `ta/<game id>/<N>p` (e.g.
`ta/Poker-v0/4p`) is the game with N players, for any N it accepts (up to 6; `palaestra envs` says which).

TextArena keeps its own rules for invalid moves (it re-prompts, then the player loses); its rewards at the
end are the `outcome` component. Every episode ends: after `max_plies` moves (default 200) it is truncated
as a draw. Only the last 4096 characters of a reply reach the game (some of its move parsers take
quadratic time). TextArena games that need NLTK corpora or an LLM the server lacks, or that do not
import on this Python, answer FAILED_PRECONDITION saying why.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import random
import re
from collections.abc import Iterator, Mapping
from functools import cache, partial
from typing import Any

from palaestra.hookspecs import PluginUnavailable, hookimpl

if importlib.util.find_spec("textarena") is None:
    raise PluginUnavailable("the TextArena plugin needs textarena: pip install 'palaestra[textarena]'")

from palaestra.env import AnyEnv, Env, EnvContext, EnvFactory
from palaestra.plugins.games.bots import Bot
from palaestra.plugins.games.catalog import OPTIONS_SCHEMA, REWARD_SPECS
from palaestra.plugins.games.envs import MAX_RETRIES, GameDef, build_env
from palaestra.plugins.games.referee import ILLEGAL_MOVE, TEXT_POLICY, Forfeit, MovePolicy, Referee
from palaestra.registry import EnvRegistry, EnvUnavailable
from palaestra.types import Action, ChatSpace, EnvKind, EnvSpec, Message, Observation

__all__ = ["PREFIX", "TextArenaReferee", "game_ids", "palaestra_register_environments", "textarena_game"]

PREFIX = "ta/"
MAX_PLIES = 200
MAX_PLAYERS = 6
PLAYERS_SUFFIX = re.compile(r"(?P<game>.+)/(?P<players>[1-9][0-9]?)p")
# Some TextArena move parsers take quadratic time (ConnectFour: 39 s for a 100 kB reply): only the last
# MAX_MOVE_CHARS characters of a reply reach the game, where the move of a reasoned reply is.
MAX_MOVE_CHARS = 4096
SENDER_GAME = -1


@cache
def _registry() -> Mapping[str, Any]:
    """TextArena's game registry, imported on first use: importing textarena takes about 1.5 s, which a
    server or CLI that never serves a `ta/` id should not pay at start-up."""
    from textarena.envs.registration import ENV_REGISTRY

    return ENV_REGISTRY


def game_ids() -> list[str]:
    """TextArena's games: every registered id but the `-train`/`-raw` variants of the same game."""
    return sorted(i for i in _registry() if not i.endswith(("-train", "-raw")))


@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """Some TextArena game modules call `nltk.download(...)` when imported; a server fetches nothing at
    run time, so a missing corpus stays missing (and the game answers FAILED_PRECONDITION)."""
    import nltk

    original = nltk.download
    nltk.download = lambda *args, **kwargs: False
    try:
        yield
    finally:
        nltk.download = original


def _constructor(game_id: str) -> Any:
    spec = _registry()[game_id]
    entry = spec.entry_point
    if isinstance(entry, str):
        module, name = entry.split(":")
        with _no_downloads():
            entry = getattr(importlib.import_module(module), name)
    return partial(entry, **spec.kwargs)


def new_game(game_id: str) -> Any:
    """A bare TextArena environment (no wrappers: observations are read as TextArena records them).
    Raises EnvUnavailable when it cannot be built here."""
    try:
        return _constructor(game_id)()
    except LookupError as exc:  # an NLTK corpus is missing
        resource = str(exc).split("Resource ")[-1].split(" not found")[0].strip(" \n'*")
        raise EnvUnavailable(
            f"ta/{game_id} needs the NLTK data {resource!r}, not installed on this server: "
            f"python -m nltk.downloader {resource}"
        ) from None
    except Exception as exc:  # a syntax error on this Python, missing files, an LLM without its API key
        raise EnvUnavailable(
            f"ta/{game_id} cannot be built by the installed textarena: {type(exc).__name__}: {exc}"
        ) from None


def player_counts(game_id: str) -> tuple[int, ...]:
    """The numbers of players the game accepts (up to MAX_PLAYERS). Raises EnvUnavailable when the game
    cannot be built here."""
    counts, unavailable = _probe(game_id)
    if unavailable:
        raise EnvUnavailable(unavailable)
    return counts


@cache  # per game of TextArena's registry: a game that cannot be built is not tried again on every open
def _probe(game_id: str) -> tuple[tuple[int, ...], str]:
    """(the player counts the game accepts, ""), or ((), why it cannot be built here)."""
    counts = []
    try:
        for players in range(1, MAX_PLAYERS + 1):
            game = new_game(game_id)
            try:
                game.reset(num_players=players, seed=0)
                game.get_observation()
            except Exception:
                continue
            counts.append(players)
    except EnvUnavailable as exc:
        return (), str(exc)
    return tuple(counts), ""


def _render(records: list[tuple[int, str, Any]]) -> str:
    """TextArena's observation records as text: who said what."""
    lines = []
    for sender, text, _kind in records:
        lines.append(str(text) if sender == SENDER_GAME else f"[Player {sender}] {text}")
    return "\n\n".join(line.strip() for line in lines if str(line).strip())


class TextArenaReferee(Referee):
    """One TextArena game behind the games plugin's referee: turns, forfeits (timeouts, disconnects),
    outcomes. TextArena's own rules judge every move, so no move is refused here."""

    simultaneous = False
    observe_all_seats = False

    def __init__(self, game_id: str, players: int, max_plies: int, policy: MovePolicy) -> None:
        super().__init__(policy)
        self.game_id = game_id
        self.players = players
        self.max_plies = max_plies
        self.agents = tuple(f"player_{i}" for i in range(players))
        self.game: Any = None
        self.done = False
        self.plies = 0
        self.final_rewards: dict[str, float] = {}
        self.reason = ""
        self.everyone_out = False

    def _reset(self, seed: int | None) -> None:
        self.game = new_game(self.game_id)
        chosen = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.game.reset(num_players=self.players, seed=chosen)
        self.done, self.plies, self.final_rewards, self.reason = False, 0, {}, ""
        self.everyone_out = False
        _guard_elimination(self)

    def _seat(self, player_id: int) -> str:
        return self.agents[player_id]

    def _game_to_act(self) -> list[str]:
        return [] if self._game_over() else [self._seat(int(self.game.state.current_player_id))]

    def _game_over(self) -> bool:
        return self.done or self.plies >= self.max_plies or self._forfeit is not None

    def _game_truncated(self) -> bool:
        return not self.done and self.plies >= self.max_plies

    def _decode(self, seat: str, action: Action) -> Any:
        return action.as_text()[-MAX_MOVE_CHARS:]

    def _play(self, moves: dict[str, Any]) -> dict[str, float]:
        [(seat, text)] = moves.items()
        try:
            done, _info = self.game.step(text)
        except Exception as exc:  # TextArena parsers crash on some malformed moves
            # seen only on malformed moves (Countdown, Cryptarithm, QuantumTicTacToe...): the mover's
            # failure, scored as a forfeit by illegal move, never an infrastructure failure
            self._forfeit = Forfeit(seat, ILLEGAL_MOVE, f"the game could not play this move ({exc!r:.200})")
            return {}
        self.plies += 1
        if not done and not self.everyone_out:
            return {}
        self.done = True
        if self.everyone_out:
            self.reason = "every player was eliminated"
            return dict.fromkeys(self.agents, 0.0)
        rewards, game_info = self.game.close()
        infos = game_info or {}
        self.final_rewards = {
            self._seat(int(p)): _reward(r, infos.get(p, {})) for p, r in (rewards or {}).items()
        }
        reasons = {str(i.get("reason", "")) for i in (game_info or {}).values() if isinstance(i, Mapping)}
        self.reason = "; ".join(sorted(r for r in reasons if r))
        return self.final_rewards

    def _pending(self, seat: str) -> list[tuple[int, str, Any]]:
        player = self.agents.index(seat)
        records = list(self.game.state.observations.get(player, []))
        self.game.state.observations[player] = []
        return records

    def _observation(self, seat: str, note: str = "") -> Observation:
        text = "\n\n".join(part for part in (_render(self._pending(seat)), note) if part)
        return Observation(
            messages=[Message("user", text or "Your move.")], info={"seat": seat, "ply": self.plies}
        )

    def _final_observation(self, seat: str, summary: str) -> Observation:
        parts = [_render(self._pending(seat)), self.reason, summary]
        return Observation(
            messages=[Message("user", "\n\n".join(p for p in parts if p))], info={"seat": seat}
        )

    def _bot_move(self, seat: str, bot: Bot, rng: random.Random) -> Any:
        raise NotImplementedError("TextArena games have no built-in bots")


def _reward(value: Any, info: Mapping[str, Any]) -> float:
    """A player's final reward. Some single-player games (Countdown, Cryptarithm, Slitherlink) swap the
    reward and the reason after an invalid move (reward 'Invalid action format...', reason 'Invalid
    Move: 0.568'): the number is read back from the reason, else 0."""
    try:
        return float(value)
    except (TypeError, ValueError):
        found = re.search(r"-?\d+(?:\.\d+)?", str(info.get("reason", "")))
        return float(found.group()) if found else 0.0


def _guard_elimination(referee: TextArenaReferee) -> None:
    """TextArena's free-for-all state looks for the next player not yet eliminated, forever when every
    player is (policies that only send invalid moves get there in MarketEntryGame). End such a game as a
    draw instead of hanging the worker."""
    state = referee.game.state
    if not hasattr(state, "elimination_order"):
        return
    step = state.step

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not state.done and set(range(state.num_players)) <= set(state.elimination_order):
            referee.everyone_out = True
            return True, {}
        return step(*args, **kwargs)

    state.step = guarded


def _referee(game_id: str, players: int, options: Mapping[str, Any]) -> Referee:
    max_plies = max(1, min(int(options.get("max_plies", MAX_PLIES)), MAX_PLIES))
    return TextArenaReferee(game_id, players, max_plies, MovePolicy.from_options(options, TEXT_POLICY))


@cache
def textarena_game(env_id: str) -> GameDef:
    """The served definition of `ta/<game id>` (for the server and for `run_tournament(game=...)`).
    Raises KeyError for an unknown id, ValueError for a player count the game does not accept, and
    EnvUnavailable for a game that cannot be built here."""
    game_id, wanted = _parse_id(env_id)
    counts = player_counts(game_id)
    if not counts:
        raise EnvUnavailable(
            f"{env_id} could not start with 1 to {MAX_PLAYERS} players here (it may need an LLM or files "
            "the server lacks)"
        )
    if wanted is not None and wanted not in counts:
        accepted = ", ".join(map(str, counts))
        raise ValueError(f"{game_id} cannot be played by {wanted} players; it accepts {accepted}")
    players = wanted or counts[0]
    kind = "single-player" if players == 1 else f"{players}-player"
    spec = EnvSpec(
        id=env_id,
        description=f"TextArena {game_id} ({kind}; accepts {', '.join(map(str, counts))} players"
        + (f": {PREFIX}{game_id}/<N>p)" if len(counts) > 1 else ")"),
        observation_space=ChatSpace(),
        action_space=ChatSpace(),
        kind=EnvKind.SINGLE_AGENT if players == 1 else EnvKind.TURN_BASED,
        agents=tuple(f"player_{i}" for i in range(players)),
        reward_components=REWARD_SPECS,
        tags=("textarena", "text", kind) + (() if players == 1 else ("games", "multi-agent")),
        max_episode_steps=MAX_PLIES * (MAX_RETRIES + 1),
        options_schema=OPTIONS_SCHEMA,
    )
    return GameDef(spec, partial(_referee, game_id, players), bots={}, default_bot="")


def _parse_id(env_id: str) -> tuple[str, int | None]:
    """`ta/<game id>[/<N>p]` as (game id, N or None). KeyError when TextArena has no such game."""
    game_id, players = env_id.removeprefix(PREFIX), None
    counted = PLAYERS_SUFFIX.fullmatch(game_id)
    if counted:
        game_id, players = counted["game"], int(counted["players"])
    if not env_id.startswith(PREFIX) or game_id not in _registry():
        raise KeyError(f"TextArena has no game {game_id!r}")
    return game_id, players


def _build(game: GameDef, context: EnvContext) -> AnyEnv:
    env = build_env(game, context)
    if isinstance(env, Env):
        # TextArena builds boards and parses moves in pure Python, sometimes slowly: a worker thread
        setattr(env, "runs_inline", False)  # noqa: B010 - an instance setting over the class default
    return env


def resolve(env_id: str) -> tuple[EnvSpec, EnvFactory] | None:
    try:
        game = textarena_game(env_id)
    except KeyError:
        return None
    return game.spec, partial(_build, game)


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    for game_id in config.get("envs", ()):  # [plugins.textarena] envs = [...]: listed up front
        found = resolve(PREFIX + game_id)
        if found is None:
            raise ValueError(f"TextArena has no game {game_id!r}")
        registry.add(*found)
    registry.add_resolver(PREFIX, resolve)
