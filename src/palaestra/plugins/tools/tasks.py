"""Tasks and the domain interface that every tool environment (stateful, web, MCP) implements."""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from palaestra.plugins.tools.toolbox import CallOutcome, Tool, Toolbox
from palaestra.rewards.checklist import ChecklistItem, JudgeContext
from palaestra.types import RewardComponent


@dataclass(frozen=True)
class PlannedCall:
    tool: str
    arguments: Mapping[str, Any]

    def arguments_json(self) -> str:
        return json.dumps(dict(self.arguments), sort_keys=True)


@dataclass(frozen=True)
class TurnPlan:
    """What the scripted reference agent does in one turn: these calls, then this reply."""

    calls: tuple[PlannedCall, ...]
    reply: str
    facts: tuple[str, ...] = ()  # what the reply must state (checked by the environment)


@dataclass(frozen=True)
class Task:
    id: str
    turns: tuple[str, ...]  # the scripted user's messages, one per turn
    instructions: str  # the user's goal in words, for a model-backed simulated user
    reference: tuple[TurnPlan, ...]
    checklist: tuple[ChecklistItem, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)  # domain specifics (answers, goal attributes)

    @property
    def facts(self) -> tuple[str, ...]:
        return tuple(f for plan in self.reference for f in plan.facts)


class Domain(abc.ABC):
    """Tools, a policy, tasks, the per-episode state, and how an episode's outcome is scored."""

    name: str = ""
    description: str = ""
    policy: str = ""
    max_episode_steps: int = 40
    outcome_components: tuple[str, ...] = ()

    @abc.abstractmethod
    def tools(self) -> Sequence[Tool]: ...

    @abc.abstractmethod
    def tasks(self) -> Sequence[Task]: ...

    @abc.abstractmethod
    def new_state(self, task: Task) -> Any: ...

    @abc.abstractmethod
    def outcome(self, task: Task, state: Any, ctx: JudgeContext) -> list[RewardComponent]:
        """The OUTCOME components at the end of an episode."""

    async def prepare(self) -> None:  # noqa: B027 - optional hook
        """Called at every reset before the tools are read (an MCP domain lists its server's tools once)."""

    def toolbox(self) -> Toolbox:
        if not hasattr(self, "_toolbox"):
            self._toolbox = Toolbox(self.tools())
        return self._toolbox

    async def call_tool(self, state: Any, name: str, arguments_json: str) -> CallOutcome:
        return await self.toolbox().call(state, name, arguments_json)

    def judge_state(self, state: Any) -> Any:
        """What state predicates of checklist items see (by default the state itself)."""
        return state

    async def close_state(self, state: Any) -> None:  # noqa: B027 - optional hook
        """Free what the state holds (a database connection, a server process)."""

    def system_prompt(self) -> str:
        return self.policy

    def select(self, selector: int | str | None, seed: int | None) -> Task:
        """The task named by index or id; else the seed picks one; else the first."""
        tasks = self.tasks()
        if isinstance(selector, str) and not selector.isdigit():
            for task in tasks:
                if task.id == selector:
                    return task
            raise KeyError(f"unknown task {selector!r} in {self.name}; ids look like {tasks[0].id!r}")
        if selector is not None:
            index = int(selector)
            if not 0 <= index < len(tasks):
                raise KeyError(f"task index {index} out of range: {self.name} has {len(tasks)} tasks")
            return tasks[index]
        return tasks[(seed or 0) % len(tasks)]
