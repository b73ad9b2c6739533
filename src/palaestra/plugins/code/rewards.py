"""Reward components of a code episode: outcome, process, checklist and format.

The checklist is the shared one (`palaestra.rewards.checklist`): six items decided from the final
facts by `FactCheck` judges, reported as one CHECKLIST component (`checklist`, the weight of the items
that passed, scaled by `checklist_weight`).

Every reward is a `RewardComponent`; the scalar is their weighted sum (the server computes it). Weights
come from `[plugins.code.rewards]`; a weight of 0 keeps a component as a reported metric only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from palaestra.plugins.code.extract import Extraction
from palaestra.plugins.code.grader import GradeReport
from palaestra.rewards.checklist import (
    ChecklistItem,
    ChecklistRun,
    ChecklistStep,
    FactCheck,
    JudgeContext,
    normalized,
)
from palaestra.types import RewardComponent, RewardKind

DEFAULT_CHECKLIST_WEIGHTS: dict[str, float] = {
    "code_extracted": 0.1,
    "compiles": 0.15,
    "public_tests_pass": 0.2,
    "hidden_tests_pass": 0.35,
    "within_time_limit": 0.1,
    "no_forbidden_calls": 0.1,
}


@dataclass(frozen=True)
class RewardConfig:
    all_pass_weight: float = 1.0  # outcome.all_hidden_pass
    fraction_weight: float = 0.0  # outcome.hidden_fraction (reported, not counted, by default)
    process_weight: float = 0.2  # process.public_delta per turn (or process.gated at the end)
    gated: bool = False  # Gated Reward Accumulation: process credit only if the outcome reaches the gate
    gate_threshold: float = 1.0  # hidden fraction needed to open the gate
    format_weight: float = 0.5  # format.code_block: -1 when no code block was found
    checklist_weight: float = 0.5  # scales the checklist item weights below
    checklist: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_CHECKLIST_WEIGHTS))

    @classmethod
    def from_config(
        cls, table: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None
    ) -> RewardConfig:
        """From `[plugins.code.rewards]`, then per-episode open options (same names)."""
        merged = {**dict(table or {}), **dict(overrides or {})}
        known = {f.name for f in fields(cls)}
        unknown = set(merged) - known
        if unknown:
            raise ValueError(f"unknown reward settings {sorted(unknown)}; known: {sorted(known)}")
        config = cls()
        changes: dict[str, Any] = {k: v for k, v in merged.items() if k != "checklist"}
        if "checklist" in merged:
            items = {**DEFAULT_CHECKLIST_WEIGHTS, **dict(merged["checklist"])}
            unknown_items = set(items) - set(DEFAULT_CHECKLIST_WEIGHTS)
            if unknown_items:
                raise ValueError(f"unknown checklist items {sorted(unknown_items)}")
            changes["checklist"] = items
        return replace(config, **changes)


@dataclass
class FinalFacts:
    """What the checklist judges at the end of an episode."""

    extraction: Extraction | None  # the extraction of the graded submission (None: nothing submitted)
    code: str | None
    syntax_error: str | None
    public: GradeReport | None
    hidden: GradeReport | None
    forbidden: Sequence[str]


def format_component(extraction: Extraction, config: RewardConfig) -> RewardComponent:
    return RewardComponent(
        name="format.code_block",
        kind=RewardKind.FORMAT,
        value=0.0 if extraction.found else -1.0,
        weight=config.format_weight,
        detail=extraction.reason,
    )


def outcome_components(hidden: GradeReport | None, config: RewardConfig) -> list[RewardComponent]:
    if hidden is None:
        passed, total, why = 0, 0, "no program was submitted"
    else:
        passed, total = hidden.passed, hidden.total
        why = "compilation failed" if not hidden.compiled else f"{passed}/{total} hidden tests passed"
    fraction = passed / total if total else 0.0
    return [
        RewardComponent(
            "outcome.all_hidden_pass", RewardKind.OUTCOME, float(total > 0 and passed == total),
            config.all_pass_weight, detail=why,
        ),
        RewardComponent(
            "outcome.hidden_fraction", RewardKind.OUTCOME, fraction, config.fraction_weight, detail=why
        ),
    ]  # fmt: skip


def process_component(delta: float, before: float, after: float, config: RewardConfig) -> RewardComponent:
    """Per turn: the change in the fraction of public tests passed (counted now unless gated)."""
    weight = 0.0 if config.gated else config.process_weight
    detail = f"public tests passed {before:.0%} -> {after:.0%}"
    if config.gated:
        detail += " (gated: credited at the end only if the outcome opens the gate)"
    return RewardComponent("process.public_delta", RewardKind.PROCESS, delta, weight, detail=detail)


def gated_process_component(
    deltas: Sequence[float], outcome_fraction: float, config: RewardConfig
) -> RewardComponent:
    """Gated Reward Accumulation: the summed per-turn credit, paid only when the outcome reaches the gate."""
    opened = outcome_fraction >= config.gate_threshold
    # A shut gate withholds credit, never a penalty: a net loss of public tests still counts.
    value = sum(deltas) if opened else min(0.0, sum(deltas))
    state = "open" if opened else "closed"
    detail = (
        f"gate {state}: hidden fraction {outcome_fraction:.2f} vs threshold {config.gate_threshold:.2f}; "
        f"per-turn deltas {[round(d, 3) for d in deltas]}"
    )
    return RewardComponent("process.gated", RewardKind.PROCESS, value, config.process_weight, detail=detail)


def _report_reason(report: GradeReport | None, which: str) -> tuple[bool, str]:
    if report is None:
        return False, f"no program to run the {which} tests against"
    if not report.compiled:
        return False, "the program did not compile"
    failing = [o.name for o in report.outcomes if not o.passed]
    if not failing:
        return report.total > 0, f"all {report.total} {which} tests passed"
    return False, f"{report.passed}/{report.total} {which} tests passed; failing: {', '.join(failing[:8])}"


def _extracted(facts: FinalFacts) -> tuple[bool, str]:
    found = facts.extraction is not None and facts.extraction.found
    return found, facts.extraction.reason if facts.extraction else "nothing was submitted"


def _in_time(facts: FinalFacts) -> tuple[bool, str]:
    reports = [r for r in (facts.public, facts.hidden) if r is not None and r.compiled]
    slow = [name for r in reports for name in r.timed_out]
    if slow:
        return False, f"time limit exceeded in: {', '.join(slow[:8])}"
    return bool(reports), "every test finished within its time limit" if reports else "nothing ran"


def _clean(facts: FinalFacts) -> tuple[bool, str]:
    if facts.code is None:
        return False, "no code"
    if facts.forbidden:
        return False, f"forbidden: {', '.join(facts.forbidden)}"
    return True, "no forbidden imports or calls"


def _prerequisite(
    check: Callable[[FinalFacts], tuple[bool, str]],
) -> Callable[[FinalFacts], tuple[bool, str]]:
    """A hygiene item a program that does nothing (e.g. `pass`) would pass: well formed, compiles, fast,
    clean. It is a prerequisite, credited only for a program that passes at least one test."""

    def judged(facts: FinalFacts) -> tuple[bool, str]:
        passed, reason = check(facts)
        if passed and not _passed_any(facts):
            return False, f"{reason}; not credited: the program passed no test"
        return passed, reason

    return judged


Check = Callable[[FinalFacts], tuple[bool, str]]
_CHECKS: dict[str, tuple[str, Check]] = {
    "code_extracted": ("a program was found in the reply", _prerequisite(_extracted)),
    "compiles": ("the program compiles (parses)", _prerequisite(lambda f: _compiles(f))),
    "public_tests_pass": ("every public test passes", lambda f: _report_reason(f.public, "public")),
    "hidden_tests_pass": ("every hidden test passes", lambda f: _report_reason(f.hidden, "hidden")),
    "within_time_limit": ("every test finishes within its time limit", _prerequisite(_in_time)),
    "no_forbidden_calls": ("no forbidden imports or calls", _prerequisite(_clean)),
}
HYGIENE_ITEMS = ("code_extracted", "compiles", "within_time_limit", "no_forbidden_calls")


def checklist(config: RewardConfig) -> list[ChecklistItem]:
    """The code checklist, one turn, weights from the config (scaled to sum to 1)."""
    items = [
        ChecklistItem(item_id, question, FactCheck(check), weight=config.checklist.get(item_id, 0.0))
        for item_id, (question, check) in _CHECKS.items()
    ]
    return normalized(items)


async def judge_checklist(facts: FinalFacts, step: int, config: RewardConfig) -> ChecklistStep:
    """Decide every item once, at the end of the episode (the shared checklist run, sparse mode)."""
    run = ChecklistRun(checklist(config), mode="sparse", stop_on_required=False)
    return await run.step(JudgeContext(turn=0, step=step, state=facts), turn_ended=True)


def _passed_any(facts: FinalFacts) -> bool:
    return any(r is not None and r.compiled and r.passed > 0 for r in (facts.public, facts.hidden))


def _compiles(facts: FinalFacts) -> tuple[bool, str]:
    if facts.code is None:
        return False, "no code"
    if facts.syntax_error:
        return False, facts.syntax_error
    report = facts.hidden or facts.public
    if report is not None and not report.compiled:
        return False, "compiler error: " + report.compile_output[-300:]
    return True, "the program compiled" if report is not None else "the program parsed"
