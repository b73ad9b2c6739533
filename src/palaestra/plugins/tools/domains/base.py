"""What the stateful database domains share: the expected final state, outcome scoring, checklists."""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from palaestra.plugins.tools.tasks import Domain, PlannedCall, Task, TurnPlan
from palaestra.plugins.tools.toolbox import CallOutcome
from palaestra.rewards.checklist import (
    ChecklistItem,
    JudgeContext,
    ReplyContains,
    StatePredicate,
    ToolCalled,
    mentions,
    normalized,
)
from palaestra.types import ComponentStatus, RewardComponent, RewardKind


def replay(domain: Domain, state: Any, calls: Sequence[PlannedCall]) -> list[CallOutcome]:
    """Runs planned calls synchronously (the database domains' tools are plain functions)."""
    outcomes = []
    for call in calls:
        checked = domain.toolbox().check(call.tool, call.arguments_json())
        if isinstance(checked, CallOutcome):
            raise ValueError(f"reference call {call} is invalid: {checked.content}")
        tool, arguments = checked
        assert tool.fn is not None
        outcomes.append(CallOutcome(json.dumps(tool.fn(state, **arguments), default=str), arguments))
    return outcomes


@dataclass(frozen=True)
class StateCheck:
    """A database predicate that must hold at the end of a turn (becomes a checklist item)."""

    turn: int
    id: str
    question: str
    predicate: Callable[[Any], bool]
    depends_on: tuple[str, ...] = ()


def build_checklist(
    plans: Sequence[TurnPlan],
    identify: PlannedCall,
    write_tools: Sequence[str],
    state_checks: Sequence[StateCheck] = (),
) -> tuple[ChecklistItem, ...]:
    """Checklist items from the reference plan: identify first, each write, state checks, the facts."""
    items: list[ChecklistItem] = [
        ChecklistItem(
            "identify",
            "Did the agent verify the user's identity before anything else?",
            ToolCalled(identify.tool, identify.arguments),
            turn=0,
            required=True,
        )
    ]
    for turn, plan in enumerate(plans):
        for n, call in enumerate(c for c in plan.calls if c.tool in write_tools):
            items.append(
                ChecklistItem(
                    f"t{turn}-{call.tool}-{n}",
                    f"Did the agent call {call.tool} with {dict(call.arguments)}?",
                    ToolCalled(call.tool, call.arguments),
                    turn=turn,
                    required=True,
                )
            )
        for check in (c for c in state_checks if c.turn == turn):
            items.append(
                ChecklistItem(
                    check.id,
                    check.question,
                    StatePredicate(check.predicate, check.question),
                    turn=turn,
                    depends_on=check.depends_on,
                )
            )
        if plan.facts:
            items.append(
                ChecklistItem(
                    f"t{turn}-facts",
                    f"Did the agent tell the user {list(plan.facts)}?",
                    ReplyContains(plan.facts),
                    turn=turn,
                )
            )
    return tuple(normalized(items))


class DatabaseDomain(Domain):
    """A domain whose outcome is: the final database equals the expected one, and the facts were said."""

    outcome_components = ("state_match", "facts_conveyed")

    @abc.abstractmethod
    def snapshot(self, state: Any) -> Any:
        """The database as plain JSON-able data, in a canonical order."""

    def expected_snapshot(self, task: Task) -> Any:
        """The database after the reference agent's calls, computed once per task."""
        cache: dict[str, Any] = self.__dict__.setdefault("_expected", {})
        if task.id not in cache:
            state = self.new_state(task)
            initial = json.dumps(self.snapshot(state), sort_keys=True, default=str)
            replay(self, state, [c for plan in task.reference for c in plan.calls])
            cache[task.id] = json.dumps(self.snapshot(state), sort_keys=True, default=str)
            self.__dict__.setdefault("_read_only", {})[task.id] = cache[task.id] == initial
            self.close_sync(state)
        return cache[task.id]

    def read_only(self, task: Task) -> bool:
        """The reference leaves the database as it was: doing nothing matches it too."""
        self.expected_snapshot(task)
        return bool(self.__dict__["_read_only"][task.id])

    def close_sync(self, state: Any) -> None:
        """Frees a state outside the event loop (the databases here need nothing async)."""

    def outcome(self, task: Task, state: Any, ctx: JudgeContext) -> list[RewardComponent]:
        final = json.dumps(self.snapshot(state), sort_keys=True, default=str)
        matches = final == self.expected_snapshot(task)
        facts = task.facts
        said = [f for f in facts if any(mentions(r.text, f) for r in ctx.replies)]
        missing = [f for f in facts if f not in said]
        detail = "" if matches else "the final database differs from the expected one"
        if matches and self.read_only(task) and (missing or not facts):
            # Doing nothing leaves the database as the reference does: no credit for that alone.
            matches, detail = (
                False,
                "the task changes nothing; the unchanged database counts with the facts told",
            )
        if not facts:
            conveyed = RewardComponent(
                "facts_conveyed", RewardKind.OUTCOME, 0.0, 0.0, ComponentStatus.NOT_RUN, "no facts to tell"
            )
        else:
            detail_facts = f"missing: {missing}" if missing else ""
            conveyed = RewardComponent(
                "facts_conveyed", RewardKind.OUTCOME, len(said) / len(facts), detail=detail_facts
            )
        return [RewardComponent("state_match", RewardKind.OUTCOME, float(matches), detail=detail), conveyed]


def money(value: float) -> str:
    return f"{value:.2f}"
