"""Barter: an original two-player negotiation game with hidden information, for LLM agents.

A market holds a few units of three goods. Each trader privately values each good (whole numbers; the
whole market is worth exactly 10 to each trader, but the two value it differently). They take turns
writing messages. A message may carry one command:

* ``PROPOSE: amber=2 salt=0 silk=1`` - the units the proposer keeps; the rest go to the other trader.
* ``ACCEPT`` - accept the other trader's standing proposal; the deal is done.

Anything else in the message is talk, passed on verbatim. With no deal after `max_turns` messages, both
get nothing. Reward: OUTCOME = (value of the goods you end up with) / 10, for each trader. Each trader
sees only its own values; learning what the other wants takes conversation.

The scripted opponent starts greedy, concedes as turns run out, answers questions about what it wants
(truthfully naming its favourite good), and reads the other trader's stated wishes to shape its offers.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from typing import Any

from palaestra.plugins.games.referee import IllegalMove, MovePolicy, Referee
from palaestra.types import Action, Message, Observation

GOODS = ("amber", "salt", "silk")
MARKET_VALUE = 10
SEATS = ("player_1", "player_2")
PROPOSE = re.compile(r"PROPOSE\s*:?\s*((?:\s*,?\s*[a-z]+\s*=\s*-?\d+)+)", re.IGNORECASE)
ACCEPT = re.compile(r"\bACCEPT\b")


@dataclass
class BarterMove:
    talk: str
    keep: dict[str, int] | None = None  # a proposal: what the proposer keeps
    accept: bool = False


def deal_market(rng: random.Random) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Unit counts and each trader's private unit values (each trader's market total is 10)."""
    while True:
        counts = {g: rng.randint(1, 4) for g in GOODS}
        values = {seat: _values_for(counts, rng) for seat in SEATS}
        if all(v is not None for v in values.values()) and values[SEATS[0]] != values[SEATS[1]]:
            return counts, {seat: v for seat, v in values.items() if v is not None}


def _values_for(counts: dict[str, int], rng: random.Random) -> dict[str, int] | None:
    for _ in range(200):
        values = {g: rng.randint(0, MARKET_VALUE) for g in GOODS}
        if (
            sum(counts[g] * values[g] for g in GOODS) == MARKET_VALUE
            and sum(v > 0 for v in values.values()) >= 2
        ):
            return values
    return None


def worth(share: dict[str, int], values: dict[str, int]) -> int:
    return sum(share[g] * values[g] for g in GOODS)


def describe(share: dict[str, int]) -> str:
    return " ".join(f"{g}={share[g]}" for g in GOODS)


class BarterReferee(Referee):
    simultaneous = False
    observe_all_seats = False

    def __init__(self, policy: MovePolicy, max_turns: int = 8) -> None:
        super().__init__(policy)
        self.agents = SEATS
        self.max_turns = max_turns
        self.counts: dict[str, int] = {}
        self.values: dict[str, dict[str, int]] = {}
        self.turn = 0
        self.offer: tuple[str, dict[str, int]] | None = None  # (proposer, what the proposer keeps)
        self.deal: dict[str, dict[str, int]] | None = None
        self.transcript: list[tuple[str, str]] = []
        self._introduced: set[str] = set()
        self._news: dict[str, list[str]] = {}

    def _reset(self, seed: int | None) -> None:
        self.counts, self.values = deal_market(random.Random(seed))
        self.turn, self.offer, self.deal = 0, None, None
        self.transcript = []
        self._introduced.clear()
        self._news = {s: [] for s in SEATS}

    def _game_to_act(self) -> list[str]:
        return [SEATS[self.turn % 2]]

    def _game_over(self) -> bool:
        return self.deal is not None or self.turn >= self.max_turns

    def _game_truncated(self) -> bool:
        return False  # running out of turns is the rules' "no deal", not a truncation

    def other(self, seat: str) -> str:
        return SEATS[1 - SEATS.index(seat)]

    def _decode(self, seat: str, action: Action) -> Any:
        text = action.as_text().strip()
        if ACCEPT.search(text):
            if self.offer is None or self.offer[0] == seat:
                raise IllegalMove("there is no proposal from the other trader to ACCEPT")
            return BarterMove(talk=text, accept=True)
        match = PROPOSE.search(text)
        if match is None:
            if "PROPOSE" in text.upper():
                raise IllegalMove(f"write proposals as `PROPOSE: {describe(self.counts)}` (what you keep)")
            return BarterMove(talk=text)
        keep = self._parse_share(match.group(1))
        return BarterMove(talk=text, keep=keep)

    def _parse_share(self, spec: str) -> dict[str, int]:
        share = dict.fromkeys(GOODS, 0)
        for name, number in re.findall(r"([a-z]+)\s*=\s*(-?\d+)", spec.lower()):
            if name not in GOODS:
                raise IllegalMove(f"unknown good {name!r}; the goods are {', '.join(GOODS)}")
            if not 0 <= int(number) <= self.counts[name]:
                raise IllegalMove(
                    f"{name}={number} is out of range: the market has {self.counts[name]} {name}"
                )
            share[name] = int(number)
        return share

    def _play(self, moves: dict[str, Any]) -> dict[str, float]:
        ((seat, move),) = moves.items()
        other = self.other(seat)
        self.transcript.append((seat, move.talk))
        self.turn += 1
        self._news[other].append(f"{seat} says: {move.talk}")
        if move.accept and self.offer is not None:
            proposer, keep = self.offer
            rest = {g: self.counts[g] - keep[g] for g in GOODS}
            self.deal = {proposer: keep, self.other(proposer): rest}
            return {s: worth(self.deal[s], self.values[s]) / MARKET_VALUE for s in SEATS}
        if move.keep is not None:
            self.offer = (seat, move.keep)
        return dict.fromkeys(SEATS, 0.0)

    def _intro(self, seat: str) -> list[Message]:
        if seat in self._introduced:
            return []
        self._introduced.add(seat)
        market = ", ".join(f"{self.counts[g]} {g}" for g in GOODS)
        values = ", ".join(f"{g} {self.values[seat][g]} each" for g in GOODS)
        rules = (
            f"You are {seat}, a trader in a barter game. The market holds {market}. Your private values: "
            f"{values} (the whole market is worth {MARKET_VALUE} to you). The other trader values the goods "
            "differently and you cannot see their values. Take turns writing messages; to propose a split, "
            f"include `PROPOSE: {describe(self.counts)}` listing what YOU keep (the rest goes to the other "
            "trader); to take the other trader's standing proposal, write `ACCEPT`. "
            f"With no deal after {self.max_turns} messages in total, both get nothing. "
            f"Your reward is the value of what you end up with, divided by {MARKET_VALUE}."
        )
        return [Message("system", rules)]

    def _status(self, seat: str) -> str:
        lines = []
        if self.offer is not None and self.offer[0] != seat:
            proposer, keep = self.offer
            yours = {g: self.counts[g] - keep[g] for g in GOODS}
            lines.append(
                f"Standing proposal from {proposer}: you get {describe(yours)} "
                f"(worth {worth(yours, self.values[seat])} to you)."
            )
        lines.append(f"Messages left: {self.max_turns - self.turn}.")
        return "\n".join(lines)

    def _observation(self, seat: str, note: str = "") -> Observation:
        parts = [*self._news[seat], note, self._status(seat)]
        self._news[seat] = []
        return Observation(
            messages=[*self._intro(seat), Message("user", "\n\n".join(p for p in parts if p))],
            info={
                "seat": seat,
                "turn": self.turn,
                "values": dict(self.values[seat]),
                "counts": dict(self.counts),
            },
        )

    def _final_observation(self, seat: str, summary: str) -> Observation:
        if self.deal is not None:
            mine = self.deal[seat]
            outcome = f"Deal: you get {describe(mine)} (worth {worth(mine, self.values[seat])} to you)."
        else:
            outcome = "No deal."
        parts = [*self._news[seat], outcome, summary]
        self._news[seat] = []
        return Observation(messages=[Message("user", "\n\n".join(parts))], info={"seat": seat})

    def _result_label(self, seat: str) -> str:
        if self._forfeit is not None:
            return super()._result_label(seat)
        return "deal" if self.deal is not None else "no_deal"

    def _bot_move(self, seat: str, bot: Any, rng: random.Random) -> Any:
        return bot(self, seat, rng)


# ---------------------------------------------------------------- the scripted opponent

_WISH = re.compile(r"\b(?:want|need|like|prefer|love|value)\w*\b([^.?!]*)", re.IGNORECASE)


def scripted_trader(referee: BarterReferee, seat: str, rng: random.Random) -> BarterMove:
    """Greedy at first, conceding as messages run out; accepts any offer at or above its current target."""
    values = referee.values[seat]
    turns_left = referee.max_turns - referee.turn
    target = max(1, round(MARKET_VALUE * (0.4 + 0.4 * turns_left / referee.max_turns)))
    if referee.offer is not None and referee.offer[0] != seat:
        mine = {g: referee.counts[g] - referee.offer[1][g] for g in GOODS}
        if worth(mine, values) >= target or (turns_left <= 1 and worth(mine, values) > 0):
            return BarterMove(talk="ACCEPT. Pleasure doing business.", accept=True)
    wished = _their_wishes(referee, seat)
    keep = _best_split(referee.counts, values, target, wished, rng)
    favourite = max(GOODS, key=lambda g: values[g])
    asked = any("?" in talk for who, talk in referee.transcript[-1:] if who != seat)
    talk = f"I care most about {favourite}. " if asked else ""
    return BarterMove(talk=f"{talk}PROPOSE: {describe(keep)}", keep=keep)


def _their_wishes(referee: BarterReferee, seat: str) -> set[str]:
    """Goods the other trader said it wants."""
    wished: set[str] = set()
    for who, talk in referee.transcript:
        if who != seat:
            for clause in _WISH.findall(talk):
                wished.update(g for g in GOODS if g in clause.lower())
    return wished


def _best_split(
    counts: dict[str, int], values: dict[str, int], target: int, wished: set[str], rng: random.Random
) -> dict[str, int]:
    """Among splits worth at least `target` to us, give away as much as possible, favouring the goods
    the other trader asked for; fall back to the most valuable split."""
    splits = [
        dict(zip(GOODS, combo, strict=True))
        for combo in itertools.product(*(range(counts[g] + 1) for g in GOODS))
    ]
    good_enough = [s for s in splits if worth(s, values) >= target]
    if not good_enough:
        return max(splits, key=lambda s: (worth(s, values), rng.random()))

    def generosity(share: dict[str, int]) -> tuple[int, int, float]:
        given_wished = sum(counts[g] - share[g] for g in wished)
        given = sum(counts[g] - share[g] for g in GOODS)
        return (given_wished, given, -worth(share, values) + rng.random())

    return max(good_enough, key=generosity)
