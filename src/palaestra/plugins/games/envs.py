"""The three ways to play a game, picked by the open options:

* no options: **self-play** - one client controls every seat (`SelfPlayEnv`);
* ``{"opponent": "minimax", "seat": "player_1"}``: a **single-agent view** against a built-in bot
  (`VsBotEnv`); only the learner's seat appears in the results;
* ``{"match_id": "m1", "seat": "player_2"}``: one seat of a **multi-client match** (`SeatEnv`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from palaestra.env import AnyEnv, Env, EnvContext, InvalidAction
from palaestra.plugins.games.match import MATCHES, MatchSettings, SeatEnv
from palaestra.plugins.games.referee import Referee, Update, merge
from palaestra.types import Action, AgentResult, EnvSpec, StepResult

MAX_RETRIES = 5  # cap on illegal_move_retries, so that spec.max_episode_steps stays a true bound


@dataclass(frozen=True)
class GameDef:
    """One served game: its spec, how to build a referee from the options, and its built-in bots."""

    spec: EnvSpec
    make_referee: Callable[[Mapping[str, Any]], Referee]
    bots: Mapping[str, Callable[..., Any]]
    default_bot: str = "random"


def build_env(game: GameDef, ctx: EnvContext) -> AnyEnv:
    """The environment factory of every game id."""
    options = {**ctx.config.get("defaults", {}), **ctx.options}
    if int(options.get("illegal_move_retries", 0)) > MAX_RETRIES:
        raise InvalidAction(f"illegal_move_retries is at most {MAX_RETRIES}")
    if "match_id" in options:
        seat = options.get("seat")
        match, taken = MATCHES.join(
            str(options["match_id"]),
            game.spec.id,
            None if seat is None else str(seat),
            lambda: game.make_referee(options),
            MatchSettings.from_options(options),
        )
        return SeatEnv(match, taken)
    if "opponent" in options:
        return VsBotEnv(game, options)
    return SelfPlayEnv(game.make_referee(options))


def _step_result(update: Update, referee: Referee) -> StepResult:
    return StepResult(update.results, next_agent=update.next_agent(referee.simultaneous))


class SelfPlayEnv(Env):
    """One client plays every seat. Each result carries news for the seats that have any."""

    runs_inline = True  # board games step in microseconds

    def __init__(self, referee: Referee) -> None:
        self.referee = referee

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        return _step_result(self.referee.start(seed), self.referee)

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        return _step_result(self.referee.act(actions), self.referee)


class VsBotEnv(Env):
    """A single-agent view: the learner holds `seat`, a built-in bot plays every other seat."""

    runs_inline = False  # a search bot can think for tens of milliseconds

    def __init__(self, game: GameDef, options: Mapping[str, Any]) -> None:
        name = str(options.get("opponent") or game.default_bot)
        if name not in game.bots:
            raise InvalidAction(
                f"no opponent {name!r} for {game.spec.id}; available: {', '.join(sorted(game.bots))}"
            )
        self.bot = game.bots[name]
        self.referee = game.make_referee(options)
        self.seat = str(options.get("seat", self.referee.agents[0]))
        if self.seat not in self.referee.agents:
            raise InvalidAction(
                f"{game.spec.id} has no seat {self.seat!r}; seats: {', '.join(self.referee.agents)}"
            )
        self.rng = random.Random()

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        self.rng = random.Random(seed)
        return self._learner_view(self.referee.start(seed))

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        action = actions.get(self.seat)
        if action is None:
            raise InvalidAction(f"you hold seat {self.seat!r}; send its action")
        return self._learner_view(self.referee.act({self.seat: action}))

    def _learner_view(self, update: Update) -> StepResult:
        """Let the bot move until it is the learner's turn (or the game is over); fold the news."""
        news = update.results.get(self.seat, AgentResult())
        while not update.over and self.seat not in update.to_act:
            bot_seat = update.to_act[0]
            update = self.referee.bot_act(bot_seat, self.bot, self.rng)
            if self.seat in update.results:
                news = merge(news, update.results[self.seat])
        return StepResult({self.seat: news}, next_agent="" if update.over else self.seat)
