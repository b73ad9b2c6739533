"""Checklist rewards: per-turn items, judges that decide them, and step rewards from newly passed items.

A checklist is a list of `ChecklistItem`s. Each item belongs to a turn (the n-th user message of a
conversation), carries a weight (the weights of one turn sum to 1), may be required, and may depend on
other items (it is only judged once they passed). A `Judge` decides an item from a `JudgeContext`, the
episode as seen so far: messages, tool calls, replies and the environment's state.

`ChecklistRun` follows one episode:

* dense mode judges the current turn's open items after every step, so a step's reward is the weight of
  the items it newly satisfied;
* sparse mode judges them only when the turn ends, so the whole turn's reward arrives on its last step.

When a turn ends, items still open are failed, except those whose judge could not run (an LLM judge that
timed out, a 500, a malformed verdict): those get status NOT_RUN, which is never a fail and never stops
the episode. A required item that failed can end the episode (`stop_on_required`).

Rule judges (`ToolCalled`, `StatePredicate`, `ReplyContains`) cover most items; `LLMJudge` asks a model
behind an OpenAI-compatible chat endpoint for a JSON verdict with its reason. Other plugins can reuse all
of this: build a `JudgeContext` per step and feed it to `ChecklistRun.step`.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from palaestra.llm import ChatEndpoint, ChatEndpointError
from palaestra.types import (
    ChecklistItemResult,
    ComponentStatus,
    Evidence,
    Message,
    RewardComponent,
    RewardKind,
)

Mode = Literal["dense", "sparse"]
SNIPPET_CHARS = 200


# ---------------------------------------------------------------- what judges see


@dataclass
class ToolCallRecord:
    """One tool call the agent made, with what came back."""

    turn: int
    step: int
    name: str
    arguments: dict[str, Any] | None  # None when the arguments were not valid JSON
    ok: bool  # False for unknown tools, bad arguments, tool errors and policy refusals
    result: str = ""
    error_kind: str = ""  # unknown_tool | bad_arguments | tool_error | policy


@dataclass
class Reply:
    """Text the agent said to the user."""

    turn: int
    step: int
    text: str


@dataclass
class JudgeContext:
    """The episode so far, as judges see it."""

    turn: int
    step: int
    messages: list[Message] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    state: Any = None  # the environment's state (a database snapshot, a browser), for predicates

    def calls_in(self, turn: int | None) -> list[ToolCallRecord]:
        return [c for c in self.tool_calls if turn is None or c.turn == turn]

    def replies_in(self, turn: int | None) -> list[Reply]:
        return [r for r in self.replies if turn is None or r.turn == turn]


@dataclass
class Verdict:
    status: ComponentStatus
    passed: bool = False
    reason: str = ""
    evidence: list[Evidence] = field(default_factory=list)

    @classmethod
    def not_run(cls, reason: str) -> Verdict:
        return cls(ComponentStatus.NOT_RUN, False, reason)


# ---------------------------------------------------------------- items


class Judge(abc.ABC):
    """Decides one checklist item. Raise nothing: a judge that cannot decide returns a NOT_RUN verdict."""

    @abc.abstractmethod
    async def judge(self, item: ChecklistItem, ctx: JudgeContext) -> Verdict: ...


@dataclass(frozen=True)
class ChecklistItem:
    id: str
    question: str  # what is checked, in words (shown to LLM judges and in reports)
    judge: Judge
    turn: int = 0
    weight: float = 1.0
    required: bool = False
    depends_on: tuple[str, ...] = ()
    pass_condition: str = ""  # when the item passes, in words
    failure_examples: tuple[str, ...] = ()


def normalized(items: Sequence[ChecklistItem]) -> list[ChecklistItem]:
    """The items with each turn's weights scaled to sum to 1."""
    totals: dict[int, float] = {}
    for item in items:
        totals[item.turn] = totals.get(item.turn, 0.0) + item.weight
    out = []
    for item in items:
        total = totals[item.turn]
        weight = item.weight / total if total > 0 else 0.0
        out.append(dataclasses.replace(item, weight=weight))
    return out


def validate(items: Sequence[ChecklistItem]) -> None:
    """Refuse duplicate ids, unknown or later dependencies, and turns whose weights do not sum to 1."""
    seen: dict[str, ChecklistItem] = {}
    for item in items:
        if item.id in seen:
            raise ValueError(f"checklist item id {item.id!r} appears twice")
        seen[item.id] = item
    for item in items:
        for dep in item.depends_on:
            if dep not in seen:
                raise ValueError(f"checklist item {item.id!r} depends on unknown item {dep!r}")
            if seen[dep].turn > item.turn:
                raise ValueError(f"checklist item {item.id!r} depends on {dep!r} from a later turn")
    totals: dict[int, float] = {}
    for item in items:
        totals[item.turn] = totals.get(item.turn, 0.0) + item.weight
    for turn, total in totals.items():
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"checklist weights of turn {turn} sum to {total}, not 1")


# ---------------------------------------------------------------- the run


@dataclass
class ChecklistStep:
    """What one step of an episode did to the checklist."""

    reward: float = 0.0  # weight of the items newly satisfied at this step
    results: list[ChecklistItemResult] = field(default_factory=list)  # items decided at this step
    stop: bool = False  # a required item failed at the end of its turn
    stop_reason: str = ""

    def components(self, scale: float = 1.0, name: str = "checklist") -> list[RewardComponent]:
        """One CHECKLIST component with the newly satisfied weight, plus a NOT_RUN marker if any."""
        passed = [r.item_id for r in self.results if r.passed]
        out = [
            RewardComponent(name, RewardKind.CHECKLIST, self.reward, scale, detail=",".join(passed)),
        ]
        not_run = [r.item_id for r in self.results if r.status is not ComponentStatus.OK]
        if not_run:
            out.append(
                RewardComponent(
                    f"{name}_not_run",
                    RewardKind.CHECKLIST,
                    0.0,
                    scale,
                    ComponentStatus.NOT_RUN,
                    detail=",".join(not_run),
                )
            )
        return out


class ChecklistRun:
    """The checklist of one episode: which items are open, passed, failed or not run."""

    def __init__(
        self, items: Sequence[ChecklistItem], mode: Mode = "dense", stop_on_required: bool = True
    ) -> None:
        validate(items)
        if mode not in ("dense", "sparse"):
            raise ValueError(f"checklist mode must be 'dense' or 'sparse', not {mode!r}")
        self.items = list(items)
        self.mode = mode
        self.stop_on_required = stop_on_required
        self.verdicts: dict[str, Verdict] = {}  # items decided for good
        self._last_not_run: dict[str, Verdict] = {}  # open items whose judge could not run yet
        self._last_failed: dict[str, Verdict] = {}  # open items' latest failing verdicts, with reasons

    @property
    def passed_ids(self) -> set[str]:
        return {i for i, v in self.verdicts.items() if v.passed}

    def turn_items(self, turn: int) -> list[ChecklistItem]:
        return [i for i in self.items if i.turn == turn]

    async def step(self, ctx: JudgeContext, turn_ended: bool) -> ChecklistStep:
        """Judge the current turn's open items after a step; close the turn when it ended."""
        out = ChecklistStep()
        if self.mode == "dense" or turn_ended:
            await self._judge_open(ctx, out)
        if turn_ended:
            self._close_turn(ctx.turn, out)
        return out

    def finish(self, last_turn: int) -> list[ChecklistItemResult]:
        """Results for the items of turns the episode never reached: NOT_RUN, never failed."""
        results = []
        for item in self.items:
            if item.id in self.verdicts:
                continue
            reason = f"the episode ended before turn {item.turn}" if item.turn > last_turn else "not decided"
            verdict = Verdict.not_run(reason)
            self.verdicts[item.id] = verdict
            results.append(_result(item, verdict))
        return results

    async def _judge_open(self, ctx: JudgeContext, out: ChecklistStep) -> None:
        # Items whose dependencies pass during this sweep are judged in the same step: loop until stable.
        progressed = True
        while progressed:
            progressed = False
            ready = [i for i in self._open(ctx.turn) if set(i.depends_on) <= self.passed_ids]
            verdicts = await asyncio.gather(*(_safe_judge(i, ctx) for i in ready))
            for item, verdict in zip(ready, verdicts, strict=True):
                if verdict.status is not ComponentStatus.OK:
                    self._last_not_run[item.id] = verdict
                elif verdict.passed:
                    self.verdicts[item.id] = verdict
                    self._last_not_run.pop(item.id, None)
                    out.reward += item.weight
                    out.results.append(_result(item, verdict))
                    progressed = True
                else:
                    self._last_not_run.pop(item.id, None)
                    self._last_failed[item.id] = verdict

    def _close_turn(self, turn: int, out: ChecklistStep) -> None:
        for item in self._open(turn):
            verdict = self._closing_verdict(item)
            self.verdicts[item.id] = verdict
            out.results.append(_result(item, verdict))
            failed = verdict.status is ComponentStatus.OK and not verdict.passed
            if failed and item.required and self.stop_on_required and not out.stop:
                out.stop = True
                out.stop_reason = f"required checklist item {item.id!r} not met: {verdict.reason}"

    def _closing_verdict(self, item: ChecklistItem) -> Verdict:
        if item.id in self._last_not_run:
            return self._last_not_run[item.id]
        for dep in item.depends_on:
            dep_verdict = self.verdicts.get(dep)
            if dep_verdict is not None and dep_verdict.status is not ComponentStatus.OK:
                return Verdict.not_run(f"depends on {dep!r}, which could not be judged")
            if dep_verdict is None or not dep_verdict.passed:
                return Verdict(ComponentStatus.OK, False, f"depends on {dep!r}, which did not pass")
        if item.id in self._last_failed:
            return self._last_failed[item.id]
        return Verdict(ComponentStatus.OK, False, "not satisfied by the end of the turn")

    def _open(self, turn: int) -> list[ChecklistItem]:
        return [i for i in self.items if i.turn == turn and i.id not in self.verdicts]


async def _safe_judge(item: ChecklistItem, ctx: JudgeContext) -> Verdict:
    try:
        return await item.judge.judge(item, ctx)
    except Exception as exc:  # a judge bug must not look like the agent failing the item
        return Verdict.not_run(f"judge raised {type(exc).__name__}: {exc}")


def _result(item: ChecklistItem, verdict: Verdict) -> ChecklistItemResult:
    return ChecklistItemResult(
        item_id=item.id,
        turn=item.turn,
        passed=verdict.passed,
        weight=item.weight,
        score=1.0 if verdict.passed else 0.0,
        status=verdict.status,
        reason=verdict.reason,
        evidence=list(verdict.evidence),
    )


# ---------------------------------------------------------------- rule judges


def _snippet(text: str) -> str:
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 3] + "..."


def arguments_match(expected: Mapping[str, Any], actual: Mapping[str, Any] | None) -> bool:
    """True when every expected argument is present with an equal value (strings compared loosely)."""
    if actual is None:
        return False
    return all(key in actual and _loosely_equal(value, actual[key]) for key, value in expected.items())


def _loosely_equal(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and isinstance(actual, str):
        return normalize_text(expected) == normalize_text(actual)
    if isinstance(expected, list) and isinstance(actual, list):
        return sorted(map(json.dumps, expected)) == sorted(map(json.dumps, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return arguments_match(expected, actual) and set(expected) == set(actual)
    return bool(expected == actual)


class ToolCalled(Judge):
    """Passes when the agent called `tool` with arguments containing `arguments` (in the item's turn)."""

    def __init__(
        self, tool: str, arguments: Mapping[str, Any] | None = None, *, succeeded: bool = True, any_turn=False
    ) -> None:
        self.tool = tool
        self.arguments = dict(arguments or {})
        self.succeeded = succeeded
        self.any_turn = any_turn

    async def judge(self, item: ChecklistItem, ctx: JudgeContext) -> Verdict:
        for call in ctx.calls_in(None if self.any_turn else item.turn):
            if call.name != self.tool or (self.succeeded and not call.ok):
                continue
            if arguments_match(self.arguments, call.arguments):
                snippet = _snippet(f"{call.name}({json.dumps(call.arguments, sort_keys=True)})")
                return Verdict(
                    ComponentStatus.OK,
                    True,
                    f"{self.tool} was called with matching arguments",
                    [Evidence(call.turn, call.step, snippet)],
                )
        return Verdict(ComponentStatus.OK, False, f"no successful {self.tool} call with {self.arguments}")


class StatePredicate(Judge):
    """Passes when `predicate(ctx.state)` is true (a database predicate, a browser condition)."""

    def __init__(self, predicate: Callable[[Any], bool], description: str) -> None:
        self.predicate = predicate
        self.description = description

    async def judge(self, item: ChecklistItem, ctx: JudgeContext) -> Verdict:
        if self.predicate(ctx.state):
            return Verdict(
                ComponentStatus.OK, True, f"state: {self.description}", [Evidence(ctx.turn, ctx.step, "")]
            )
        return Verdict(ComponentStatus.OK, False, f"state does not satisfy: {self.description}")


class FactCheck(Judge):
    """Passes when `check(ctx.state)` says so; the check gives its own reason either way (for items
    decided from facts an environment gathered, e.g. a code submission's test reports)."""

    def __init__(self, check: Callable[[Any], tuple[bool, str]]) -> None:
        self.check = check

    async def judge(self, item: ChecklistItem, ctx: JudgeContext) -> Verdict:
        passed, reason = self.check(ctx.state)
        evidence = [Evidence(ctx.turn, ctx.step, "")] if passed else []
        return Verdict(ComponentStatus.OK, passed, reason, evidence)


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace("$", "").replace(",", "")).strip()


def mentions(text: str, value: str) -> bool:
    """Whether `text` states `value`, ignoring case and spacing; '$1,045.00' also matches '1045'."""
    haystack = normalize_text(text)
    for variant in _variants(normalize_text(value)):
        if re.search(rf"(?<![\w.]){re.escape(variant)}(?![\w]|\.\d)", haystack):
            return True
    return False


def _variants(value: str) -> list[str]:
    out = [value]
    if re.fullmatch(r"\d+\.\d+", value):
        stripped = value.rstrip("0").rstrip(".")
        out.append(stripped)
    return out


class ReplyContains(Judge):
    """Passes when the agent's replies (in the item's turn) state every one (or any) of `values`."""

    def __init__(self, values: Iterable[str], *, mode: Literal["all", "any"] = "all", any_turn=False) -> None:
        self.values = list(values)
        self.mode = mode
        self.any_turn = any_turn

    async def judge(self, item: ChecklistItem, ctx: JudgeContext) -> Verdict:
        replies = ctx.replies_in(None if self.any_turn else item.turn)
        found: dict[str, Reply] = {}
        for value in self.values:
            for reply in replies:
                if mentions(reply.text, value):
                    found[value] = reply
                    break
        ok = len(found) == len(self.values) if self.mode == "all" else bool(found)
        if not ok:
            missing = [v for v in self.values if v not in found]
            return Verdict(ComponentStatus.OK, False, f"replies do not state {missing}")
        evidence = [Evidence(r.turn, r.step, _snippet(r.text)) for r in found.values()]
        return Verdict(ComponentStatus.OK, True, f"replies state {sorted(found)}", evidence)


# ---------------------------------------------------------------- LLM judge


# ChatEndpoint (the one OpenAI-compatible client) lives in palaestra.llm; re-exported here for judges.


JUDGE_SYSTEM_PROMPT = (
    "You grade one checklist item of a conversation between a user and an AI assistant that uses tools. "
    "Decide only the item you are given, from the transcript alone. Answer with a JSON object "
    '{"verdict": "pass" or "fail", "reason": "<one sentence>"} and nothing else.'
)


def render_transcript(messages: Sequence[Message], max_chars: int = 12000) -> str:
    lines = []
    for m in messages:
        text = m.content
        if m.tool_calls:
            calls = "; ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
            text = f"{text} [tool calls: {calls}]".strip()
        lines.append(f"{m.role}: {text}")
    rendered = "\n".join(lines)
    return rendered if len(rendered) <= max_chars else "...\n" + rendered[-max_chars:]


def parse_verdict(text: str) -> tuple[bool, str]:
    """(passed, reason) from a judge's answer; ValueError when it is not a well-formed verdict."""
    cleaned = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    data = json.loads(cleaned)
    if not isinstance(data, dict):
        raise ValueError("the verdict is not a JSON object")
    verdict = str(data.get("verdict", "")).strip().lower()
    if verdict not in ("pass", "fail"):
        raise ValueError(f"verdict must be 'pass' or 'fail', got {data.get('verdict')!r}")
    return verdict == "pass", str(data.get("reason", ""))


class LLMJudge(Judge):
    """Asks a model for a structured verdict. Any failure of the endpoint gives NOT_RUN, never a fail."""

    def __init__(self, endpoint: ChatEndpoint) -> None:
        self.endpoint = endpoint

    async def judge(self, item: ChecklistItem, ctx: JudgeContext) -> Verdict:
        prompt = (
            f"Checklist item ({item.id}): {item.question}\n"
            f"Passes when: {item.pass_condition or item.question}\n"
            + (
                f"Fails for example when: {'; '.join(item.failure_examples)}\n"
                if item.failure_examples
                else ""
            )
            + f"\nTranscript:\n{render_transcript(ctx.messages)}"
        )
        messages = [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
        try:
            answer = await self.endpoint.complete(messages, json_mode=True)
            passed, reason = parse_verdict(answer)
        except ChatEndpointError as exc:
            return Verdict.not_run(f"LLM judge failed: {exc}")
        except ValueError as exc:
            return Verdict.not_run(f"LLM judge gave a malformed verdict: {exc}")
        last = ctx.messages[-1].content if ctx.messages else ""
        return Verdict(ComponentStatus.OK, passed, reason, [Evidence(ctx.turn, ctx.step, _snippet(last))])


__all__ = [
    "ChatEndpoint",
    "ChatEndpointError",
    "ChecklistItem",
    "ChecklistRun",
    "ChecklistStep",
    "Judge",
    "JudgeContext",
    "LLMJudge",
    "Mode",
    "Reply",
    "ReplyContains",
    "StatePredicate",
    "ToolCallRecord",
    "ToolCalled",
    "Verdict",
    "arguments_match",
    "mentions",
    "normalized",
    "parse_verdict",
    "validate",
]
