"""The referee: one place for the rules of play around a game engine.

It decodes actions (tensor indices or text moves), applies the illegal-move policy (re-prompt with an
explanation up to N times, then a PENALTY component and a forfeit), turns the engine's rewards into
reward components, and writes each seat's own observation. Self-play episodes, single-agent episodes
against a bot, and multi-client matches all drive a referee; none of them knows the game.

A referee answers every call with an `Update`: the news for each seat that has any, and the seats
expected to act next.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from palaestra.env import InvalidAction
from palaestra.plugins.games.bots import Bot, legal_or_all
from palaestra.plugins.games.engine import Game
from palaestra.plugins.games.text import TextRules
from palaestra.types import Action, AgentResult, Message, Observation, RewardComponent, RewardKind

OUTCOME = "outcome"  # +1 win, -1 loss, 0 draw (or the PettingZoo env's own rewards)
ILLEGAL_MOVE = "illegal_move"
MOVE_TIMEOUT = "move_timeout"
DISCONNECT = "disconnect"


@dataclass(frozen=True)
class MovePolicy:
    """What happens after an illegal or unparsable move."""

    retries: int = 0  # re-prompts (with an explanation) before the seat forfeits
    retry_penalty: float = 0.1  # weight of the PENALTY component of each re-prompted attempt
    forfeit_penalty: float = 1.0  # weight of the PENALTY component that comes with a forfeit
    reject: bool = False  # instead: refuse the action (INVALID_ARGUMENT), nothing is scored

    @classmethod
    def from_options(cls, options: Mapping[str, Any], default: MovePolicy) -> MovePolicy:
        return cls(
            retries=int(options.get("illegal_move_retries", default.retries)),
            retry_penalty=float(options.get("retry_penalty", default.retry_penalty)),
            forfeit_penalty=float(options.get("forfeit_penalty", default.forfeit_penalty)),
            reject=str(options.get("illegal_move", "reject" if default.reject else "penalise")) == "reject",
        )


TENSOR_POLICY = MovePolicy(retries=0)  # like PettingZoo's TerminateIllegalWrapper, but scored as a forfeit
TEXT_POLICY = MovePolicy(retries=2)


class IllegalMove(Exception):
    """The move cannot be played; the message explains why, for the re-prompt."""


@dataclass
class Update:
    results: dict[str, AgentResult]
    to_act: list[str]
    over: bool

    def next_agent(self, simultaneous: bool) -> str:
        return self.to_act[0] if self.to_act and not simultaneous else ""


@dataclass
class Forfeit:
    loser: str
    reason: str
    detail: str = ""


class Referee(abc.ABC):
    """The shared part of every game: turn order, illegal moves, forfeits, outcomes."""

    agents: tuple[str, ...]
    simultaneous: bool
    observe_all_seats: bool  # tensor forms report every seat's observation after each move

    def __init__(self, policy: MovePolicy) -> None:
        self.policy = policy
        self._attempts: dict[str, int] = {}
        self._held: dict[str, Any] = {}  # simultaneous games: moves waiting for the other seats
        self._forfeit: Forfeit | None = None
        self.returns: dict[str, float] = {}

    # ------------------------------------------------------------ the game-specific part

    @abc.abstractmethod
    def _reset(self, seed: int | None) -> None: ...

    @abc.abstractmethod
    def _game_to_act(self) -> list[str]: ...

    @abc.abstractmethod
    def _game_over(self) -> bool: ...

    @abc.abstractmethod
    def _game_truncated(self) -> bool: ...

    @abc.abstractmethod
    def _decode(self, seat: str, action: Action) -> Any:
        """The engine move for an action; raise IllegalMove to explain why it cannot be played."""

    @abc.abstractmethod
    def _play(self, moves: dict[str, Any]) -> dict[str, float]:
        """Apply one move per acting seat; returns each seat's reward for it."""

    @abc.abstractmethod
    def _observation(self, seat: str, note: str = "") -> Observation:
        """This seat's observation now; `note` explains a re-prompt."""

    @abc.abstractmethod
    def _final_observation(self, seat: str, summary: str) -> Observation: ...

    @abc.abstractmethod
    def _bot_move(self, seat: str, bot: Bot, rng: random.Random) -> Any: ...

    def _result_label(self, seat: str) -> str:
        """How the game ended for this seat; zero-sum games compare returns."""
        value = self.returns.get(seat, 0.0)
        return "win" if value > 0 else "loss" if value < 0 else "draw"

    # ------------------------------------------------------------ driving a game

    @property
    def over(self) -> bool:
        return self._forfeit is not None or self._game_over()

    def to_act(self) -> list[str]:
        if self.over:
            return []
        return [s for s in self._game_to_act() if s not in self._held]

    def start(self, seed: int | None) -> Update:
        self._attempts.clear()
        self._held.clear()
        self._forfeit = None
        self.returns = dict.fromkeys(self.agents, 0.0)
        self._reset(seed)
        to_act = self.to_act()
        seats = self.agents if self.observe_all_seats else to_act
        return Update({s: AgentResult(observation=self._observation(s)) for s in seats}, to_act, False)

    def act(self, actions: Mapping[str, Action]) -> Update:
        """Moves of seats whose turn it is. Illegal moves are handled by the policy, never raised,
        unless the policy says `reject`."""
        self._check_turn(actions)
        moves: dict[str, Any] = {}
        for seat, action in actions.items():
            try:
                moves[seat] = self._decode(seat, action)
            except IllegalMove as exc:
                return self._illegal(seat, str(exc))
        return self._submit(moves)

    def bot_act(self, seat: str, bot: Bot, rng: random.Random) -> Update:
        """Let a built-in bot move for `seat`."""
        return self._submit({seat: self._bot_move(seat, bot, rng)})

    def forfeit(self, seat: str, reason: str, detail: str = "") -> Update:
        """End the game now: `seat` loses (e.g. a move timeout or a disconnect), everyone else wins."""
        if self.over:
            return Update({}, [], True)
        self._forfeit = Forfeit(seat, reason, detail)
        return self._final(dict.fromkeys(self.agents, 0.0))

    def catch_up(self, seat: str) -> AgentResult:
        """A full observation for a seat that (re)joins mid-game."""
        return AgentResult(observation=self._observation(seat))

    # ------------------------------------------------------------ internals

    def _check_turn(self, actions: Mapping[str, Action]) -> None:
        if self.over:
            raise InvalidAction("the game is over")
        expected = self.to_act()
        for seat in actions:
            if seat not in expected:
                waiting = ", ".join(expected) or "nobody"
                raise InvalidAction(f"{seat} cannot move now; waiting for {waiting}")
        if not actions:
            raise InvalidAction(f"no move given; waiting for {', '.join(expected)}")

    def _submit(self, moves: dict[str, Any]) -> Update:
        self._held.update(moves)
        waiting = self.to_act()
        if waiting:  # simultaneous: the round is played once every live seat has moved
            return Update({}, waiting, False)
        played, self._held = self._held, {}
        self._attempts.clear()
        rewards = self._play(played)
        for seat, value in rewards.items():
            self.returns[seat] = self.returns.get(seat, 0.0) + value
        if self._game_over():
            return self._final(rewards)
        results = {s: AgentResult(components=[_outcome(r)]) for s, r in rewards.items() if r}
        to_act = self.to_act()
        for seat in self.agents if self.observe_all_seats else to_act:
            results.setdefault(seat, AgentResult()).observation = self._observation(seat)
        return Update(results, to_act, False)

    def _illegal(self, seat: str, problem: str) -> Update:
        if self.policy.reject:
            raise InvalidAction(problem)
        self._attempts[seat] = self._attempts.get(seat, 0) + 1
        if self._attempts[seat] > self.policy.retries:
            return self.forfeit(seat, ILLEGAL_MOVE, problem)
        retries_left = self.policy.retries - self._attempts[seat] + 1
        penalty = RewardComponent(
            ILLEGAL_MOVE, RewardKind.PENALTY, -1.0, self.policy.retry_penalty, detail=problem
        )
        result = AgentResult(
            observation=self._observation(seat, note=f"Illegal move: {problem}. Try again."),
            components=[penalty],
            info={"illegal_move": problem, "retries_left": retries_left},
        )
        return Update({seat: result}, self.to_act(), False)

    def _final(self, rewards: dict[str, float]) -> Update:
        forfeit = self._forfeit
        truncated = forfeit is None and self._game_truncated()
        reason = forfeit.reason if forfeit else ("max_plies" if truncated else "rules")
        results: dict[str, AgentResult] = {}
        for seat in self.agents:
            value = rewards.get(seat, 0.0)
            components = []
            if forfeit is not None:
                value = -1.0 if seat == forfeit.loser else 1.0
                self.returns[seat] = value
            components.append(_outcome(value))
            if forfeit is not None and seat == forfeit.loser:
                components.append(
                    RewardComponent(
                        forfeit.reason,
                        RewardKind.PENALTY,
                        -1.0,
                        self.policy.forfeit_penalty,
                        detail=forfeit.detail,
                    )
                )
            result = self._result_label(seat)
            summary = _summary(result, reason, forfeit, seat)
            results[seat] = AgentResult(
                observation=self._final_observation(seat, summary),
                components=components,
                terminated=not truncated,
                truncated=truncated,
                info={"result": result, "reason": reason},
            )
        return Update(results, [], True)


def _outcome(value: float) -> RewardComponent:
    return RewardComponent(OUTCOME, RewardKind.OUTCOME, float(value))


def _summary(result: str, reason: str, forfeit: Forfeit | None, seat: str) -> str:
    if forfeit is None:
        ending = "the move limit was reached" if reason == "max_plies" else "the game ended by its rules"
        return f"Game over: {result} ({ending})."
    who = "you" if forfeit.loser == seat else forfeit.loser
    detail = f": {forfeit.detail}" if forfeit.detail else ""
    return f"Game over: {result} ({who} forfeited by {forfeit.reason.replace('_', ' ')}{detail})."


# ---------------------------------------------------------------- board games (PettingZoo)


class BoardReferee(Referee):
    """A PettingZoo game in tensor form (`rules` None) or text form (with the game's `TextRules`)."""

    def __init__(
        self, game: Game, action_count: int, policy: MovePolicy, rules: TextRules | None = None
    ) -> None:
        super().__init__(policy)
        self.game = game
        self.agents = game.agents
        self.simultaneous = game.simultaneous
        self.rules = rules
        self.observe_all_seats = rules is None
        self.action_count = action_count
        self._introduced: set[str] = set()
        self._news: dict[str, list[str]] = {}  # text form: what happened since the seat last looked

    def _reset(self, seed: int | None) -> None:
        self.game.reset(seed)
        self._introduced.clear()
        self._news = {s: [] for s in self.agents}

    def _game_to_act(self) -> list[str]:
        return self.game.to_act()

    def _game_over(self) -> bool:
        return self.game.over

    def _game_truncated(self) -> bool:
        return self.game.truncated

    def _legal_moves(self, seat: str) -> dict[str, int]:
        assert self.rules is not None
        legal = legal_or_all(self.game.legal(seat), self.action_count)
        return self.rules.legal_moves(self.game.raw, self.agents.index(seat), legal)

    def _decode(self, seat: str, action: Action) -> Any:
        if self.rules is None:
            return self._decode_tensor(seat, action)
        text = action.as_text()
        candidate = self.rules.extract(text)
        legal = self._legal_moves(seat)
        if candidate is None:
            raise IllegalMove(
                f"no move found in the reply; answer with `move: X` where X is {self.rules.notation}"
            )
        name = self.rules.resolve(self.game.raw, candidate, legal)
        if name is None:
            raise IllegalMove(f"{candidate!r} is not a legal move now")
        return (legal[name], name)

    def _decode_tensor(self, seat: str, action: Action) -> Any:
        if action.discrete is not None:
            index = int(action.discrete)
        elif action.tensor is not None and action.tensor.size == 1:
            index = int(action.tensor.reshape(-1)[0])
        elif action.tensor is not None:
            return (action.tensor, "")  # continuous or multi-discrete PettingZoo actions pass through
        else:
            raise InvalidAction(f"expected a discrete action, got a {action.kind} action")
        legal = self.game.legal(seat)
        if legal is not None and index not in legal:
            raise IllegalMove(f"action {index} is masked out (not legal now)")
        return (index, str(index))

    def _bot_move(self, seat: str, bot: Bot, rng: random.Random) -> Any:
        legal = legal_or_all(self.game.legal(seat), self.action_count)
        index = bot(self.game, seat, legal, rng)
        name = (
            self.rules.move_name(self.game.raw, self.agents.index(seat), index) if self.rules else str(index)
        )
        return (index, name)

    def _play(self, moves: dict[str, Any]) -> dict[str, float]:
        if self.rules is not None:
            for mover, (_, name) in moves.items():
                for seat in self.agents:
                    if seat != mover:
                        self._news[seat].append(f"{self._label(mover)} played {name}.")
        return self.game.apply({seat: index for seat, (index, _) in moves.items()})

    def _label(self, seat: str) -> str:
        marks = getattr(self.rules, "MARKS", None)
        if marks is not None:
            return f"{seat} ({marks[self.agents.index(seat) + 1]})"
        return f"{seat} ({'White' if self.agents.index(seat) == 0 else 'Black'})"

    def _observation(self, seat: str, note: str = "") -> Observation:
        tensor, mask = self.game.observe(seat)
        if self.rules is None:
            return Observation(tensor=tensor, action_mask=mask)
        legal = self._legal_moves(seat) if seat in self.game.to_act() else {}
        parts = [*self._news[seat], note, self.rules.board(self.game.raw)]
        if legal:
            parts.append(f"Legal moves: {', '.join(legal)}")
            parts.append(f"Your move, {self._label(seat)}.")
        self._news[seat] = []
        return Observation(
            messages=[*self._intro(seat), Message("user", "\n\n".join(p for p in parts if p))],
            legal_actions=list(legal),
            info={"seat": seat, "ply": self.game.plies},
        )

    def _final_observation(self, seat: str, summary: str) -> Observation:
        tensor, mask = self.game.observe(seat)
        if self.rules is None:
            return Observation(tensor=tensor, action_mask=None if mask is None else np.zeros_like(mask))
        parts = [*self._news[seat], self.rules.board(self.game.raw), summary]
        self._news[seat] = []
        return Observation(messages=[Message("user", "\n\n".join(parts))], info={"seat": seat})

    def _intro(self, seat: str) -> list[Message]:
        if seat in self._introduced or self.rules is None:
            return []
        self._introduced.add(seat)
        return [Message("system", self.rules.intro(self.agents.index(seat)))]

    def catch_up(self, seat: str) -> AgentResult:
        self._introduced.discard(seat)  # a new connection has seen nothing yet
        return super().catch_up(seat)


def merge(earlier: AgentResult, later: AgentResult) -> AgentResult:
    """Fold two pieces of news for one seat into one result (messages are deltas, so they add up)."""
    observation = Observation(
        messages=[*earlier.observation.messages, *later.observation.messages],
        tools=later.observation.tools or earlier.observation.tools,
        tensor=later.observation.tensor
        if later.observation.tensor is not None
        else earlier.observation.tensor,
        action_mask=(
            later.observation.action_mask
            if later.observation.tensor is not None
            else earlier.observation.action_mask
        ),
        legal_actions=later.observation.legal_actions,
        info={**earlier.observation.info, **later.observation.info},
    )
    return AgentResult(
        observation=observation,
        components=[*earlier.components, *later.components],
        checklist=[*earlier.checklist, *later.checklist],
        terminated=earlier.terminated or later.terminated,
        truncated=earlier.truncated or later.truncated,
        info={**earlier.info, **later.info},
    )


@dataclass
class SeatBox:
    """News for one seat, gathered until it is delivered."""

    pending: AgentResult | None = None

    def add(self, news: AgentResult) -> None:
        self.pending = news if self.pending is None else merge(self.pending, news)

    def take(self) -> AgentResult:
        news, self.pending = self.pending or AgentResult(), None
        return news
