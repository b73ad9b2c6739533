"""Multi-client matches: several clients, each holding one seat of the same game.

Every client opens its own ordinary episode of a game with ``{"match_id": ..., "seat": ...}``. The
first one creates a `Match` in the process-level `MATCHES` table; the others join it. Each episode's
environment is a seat view (`SeatEnv`) over the shared match:

* ``reset`` waits until every seat is taken, then until it is this seat's turn (or the game is over),
  and returns this seat's observation. So the second player's open returns after the first move.
* ``step`` plays this seat's move and waits until it is this seat's turn again, or the game is over.
  In a simultaneous game the round is played once every seat has moved.
* Each seat only ever receives its own results.
* A seat that does not move within ``move_timeout_s`` forfeits. A seat whose episode closes (its
  client went away) forfeits unless a client re-opens the same seat within ``disconnect_grace_s``;
  the returning client gets a full observation of the current position.

Everything runs on the server's event loop (asyncio primitives, no threads). A match leaves the table
when the game is over or when every seat left before it started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from palaestra.env import AsyncEnv, InvalidAction
from palaestra.plugins.games.referee import DISCONNECT, MOVE_TIMEOUT, Referee, SeatBox, Update
from palaestra.types import Action, AgentResult, StepResult


@dataclass(frozen=True)
class MatchSettings:
    move_timeout_s: float = 0.0  # 0: no limit per move
    disconnect_grace_s: float = 10.0
    join_timeout_s: float = 300.0  # how long reset waits for the other seats

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MatchSettings:
        default = cls()
        return cls(
            move_timeout_s=float(options.get("move_timeout_s", default.move_timeout_s)),
            disconnect_grace_s=float(options.get("disconnect_grace_s", default.disconnect_grace_s)),
            join_timeout_s=float(options.get("join_timeout_s", default.join_timeout_s)),
        )


class _Seat:
    def __init__(self) -> None:
        self.box = SeatBox()
        self.ready = asyncio.Event()  # set when the seat has a result to return (its turn, or game over)
        self.connected = False
        self.rejoined = False
        self.move_timer: asyncio.TimerHandle | None = None
        self.grace_timer: asyncio.TimerHandle | None = None


class Match:
    def __init__(
        self,
        match_id: str,
        env_id: str,
        referee: Referee,
        settings: MatchSettings,
        on_end: Callable[[Match], None],
    ) -> None:
        self.match_id = match_id
        self.env_id = env_id
        self.referee = referee
        self.settings = settings
        self.seats = {name: _Seat() for name in referee.agents}
        self.started = False
        self.seed: int | None = None
        self._full = asyncio.Event()
        self._on_end = on_end

    # ------------------------------------------------------------ seats

    def claim(self, wanted: str | None) -> str:
        """Take a seat: the named one, or the first free one; a disconnected seat can be re-taken."""
        if wanted is None:
            free = [name for name, seat in self.seats.items() if not seat.connected]
            if not free:
                raise InvalidAction(f"match {self.match_id!r} is full")
            wanted = free[0]
        if wanted not in self.seats:
            raise InvalidAction(
                f"match {self.match_id!r} has no seat {wanted!r}; seats: {', '.join(self.seats)}"
            )
        seat = self.seats[wanted]
        if seat.connected:
            raise InvalidAction(f"seat {wanted!r} of match {self.match_id!r} is already taken")
        if self.referee.over:
            raise InvalidAction(f"match {self.match_id!r} is over")
        seat.connected = True
        if self.started:
            seat.rejoined = True
            _cancel(seat.grace_timer)
        return wanted

    def leave(self, name: str) -> None:
        seat = self.seats[name]
        seat.connected = False
        if self.referee.over:
            return
        if not self.started:
            if not any(s.connected for s in self.seats.values()):
                self._on_end(self)
            return
        loop = asyncio.get_running_loop()
        seat.grace_timer = loop.call_later(self.settings.disconnect_grace_s, self._grace_expired, name)

    # ------------------------------------------------------------ the seat views' calls

    async def first_result(self, name: str, seed: int | None) -> AgentResult:
        seat = self.seats[name]
        if seat.rejoined:
            seat.rejoined = False
            seat.ready.clear()
            seat.box.take()  # what a lost connection missed is replaced by a full view
            seat.box.add(self.referee.catch_up(name))
            if name in self.referee.to_act():
                seat.ready.set()
            return await self._wait(name)
        if self.seed is None:
            self.seed = seed
        if all(s.connected for s in self.seats.values()) and not self.started:
            self.started = True
            self._full.set()
            self._deliver(self.referee.start(self.seed))
        try:
            await asyncio.wait_for(self._full.wait(), self.settings.join_timeout_s)
        except TimeoutError:
            return AgentResult(truncated=True, info={"reason": "match_not_filled"})
        return await self._wait(name)

    async def submit(self, name: str, action: Action) -> AgentResult:
        if self.referee.over:
            return await self._wait(name)
        if name not in self.referee.to_act():
            raise InvalidAction(f"it is not {name}'s turn")
        _cancel(self.seats[name].move_timer)
        self.seats[name].move_timer = None
        self._deliver(self.referee.act({name: action}))
        return await self._wait(name)

    # ------------------------------------------------------------ internals

    async def _wait(self, name: str) -> AgentResult:
        seat = self.seats[name]
        await seat.ready.wait()
        seat.ready.clear()
        return seat.box.take()

    def _deliver(self, update: Update) -> None:
        for name, news in update.results.items():
            self.seats[name].box.add(news)
        if update.over:
            self._finish()
            return
        for name in update.to_act:
            self._begin_turn(name)

    def _begin_turn(self, name: str) -> None:
        seat = self.seats[name]
        seat.ready.set()
        if self.settings.move_timeout_s > 0 and seat.move_timer is None:
            loop = asyncio.get_running_loop()
            seat.move_timer = loop.call_later(self.settings.move_timeout_s, self._move_timed_out, name)

    def _move_timed_out(self, name: str) -> None:
        self.seats[name].move_timer = None
        if not self.referee.over and name in self.referee.to_act():
            detail = f"no move within {self.settings.move_timeout_s:g} s"
            self._deliver(self.referee.forfeit(name, MOVE_TIMEOUT, detail))

    def _grace_expired(self, name: str) -> None:
        if not self.seats[name].connected and not self.referee.over:
            detail = f"not back within {self.settings.disconnect_grace_s:g} s"
            self._deliver(self.referee.forfeit(name, DISCONNECT, detail))

    def _finish(self) -> None:
        for seat in self.seats.values():
            _cancel(seat.move_timer)
            _cancel(seat.grace_timer)
            seat.ready.set()
        self._on_end(self)


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


class MatchTable:
    """The process-level table of matches, keyed by match id."""

    def __init__(self) -> None:
        self._matches: dict[str, Match] = {}

    def join(
        self,
        match_id: str,
        env_id: str,
        seat: str | None,
        make_referee: Callable[[], Referee],
        settings: MatchSettings,
    ) -> tuple[Match, str]:
        match = self._matches.get(match_id)
        if match is None:
            match = Match(match_id, env_id, make_referee(), settings, self._drop)
            self._matches[match_id] = match
        elif match.env_id != env_id:
            raise InvalidAction(f"match {match_id!r} plays {match.env_id}, not {env_id}")
        return match, match.claim(seat)

    def _drop(self, match: Match) -> None:
        if self._matches.get(match.match_id) is match:
            del self._matches[match.match_id]

    def __contains__(self, match_id: object) -> bool:
        return match_id in self._matches

    def __len__(self) -> int:
        return len(self._matches)


MATCHES = MatchTable()


class SeatEnv(AsyncEnv):
    """One client's view of a shared match: only this seat's results, delivered when it must act."""

    def __init__(self, match: Match, seat: str) -> None:
        self.match = match
        self.seat = seat
        self._reset_done = False
        self._closed = False

    async def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        if self._reset_done:
            raise InvalidAction("a match seat plays one game; open a new episode for the next one")
        self._reset_done = True
        return self._result(await self.match.first_result(self.seat, seed))

    async def step(self, actions: Mapping[str, Action]) -> StepResult:
        action = actions.get(self.seat)
        if action is None or len(actions) != 1:
            raise InvalidAction(f"this episode holds seat {self.seat!r} only; send that seat's action")
        return self._result(await self.match.submit(self.seat, action))

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(KeyError):
                self.match.leave(self.seat)

    def _result(self, result: AgentResult) -> StepResult:
        return StepResult({self.seat: result}, next_agent="" if result.done else self.seat)
