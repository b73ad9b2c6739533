"""The hook for learned process reward models (PRMs).

A PRM is a reward function registered by any plugin through `palaestra_register_reward_functions`,
with this signature (sync or async):

    prm(problem: str, steps: list[str]) -> list[float]     # one score in [0, 1] per step

A math environment whose config or options name it (`prm = "my_prm"`) finds it in `ctx.rewards`, calls
it with the agent's solution split into steps, and reports a PROCESS component. A PRM that fails or is
slow gives the component status ERROR or TIMEOUT - never a score of 0.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from palaestra.types import ComponentStatus, RewardComponent, RewardKind

Aggregate = Literal["min", "mean", "last"]
AGGREGATES: tuple[str, ...] = ("min", "mean", "last")
WRONG_STEP_THRESHOLD = 0.5


async def call_prm(fn: Callable[..., Any], problem: str, steps: list[str], timeout_s: float) -> list[float]:
    """Call a PRM with a deadline; synchronous ones run in a thread so they cannot block the loop."""
    if inspect.iscoroutinefunction(fn):
        result = await asyncio.wait_for(fn(problem=problem, steps=steps), timeout_s)
    else:
        result = await asyncio.wait_for(asyncio.to_thread(fn, problem=problem, steps=steps), timeout_s)
    return validate_scores(result, len(steps))


def validate_scores(result: Any, expected: int) -> list[float]:
    if not isinstance(result, Sequence) or isinstance(result, str | bytes):
        raise TypeError(f"a PRM must return a list of floats, got {type(result).__name__}")
    scores = [float(x) for x in result]
    if len(scores) != expected:
        raise ValueError(f"the PRM returned {len(scores)} scores for {expected} steps")
    if not all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores):
        raise ValueError("PRM scores must lie in [0, 1]")
    return scores


def aggregate(scores: list[float], how: Aggregate) -> float:
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    return sum(scores) / len(scores)


async def prm_component(
    fn: Callable[..., Any],
    name: str,
    problem: str,
    steps: list[str],
    how: Aggregate,
    timeout_s: float,
    weight: float,
) -> tuple[RewardComponent, list[float]]:
    """The PRM's PROCESS component and its per-step scores (empty when it could not be computed)."""
    if not steps:
        return RewardComponent(
            "prm", RewardKind.PROCESS, 0.0, weight, ComponentStatus.NOT_RUN, "no steps to score"
        ), []
    try:
        scores = await call_prm(fn, problem, steps, timeout_s)
    except TimeoutError:
        detail = f"PRM {name!r} took longer than {timeout_s:.1f}s"
        return RewardComponent("prm", RewardKind.PROCESS, 0.0, weight, ComponentStatus.TIMEOUT, detail), []
    except Exception as exc:  # the PRM's own failure is an infrastructure problem, not the agent's
        detail = f"PRM {name!r} failed: {type(exc).__name__}: {str(exc)[:300]}"
        return RewardComponent("prm", RewardKind.PROCESS, 0.0, weight, ComponentStatus.ERROR, detail), []
    first_low = next((i for i, s in enumerate(scores) if s < WRONG_STEP_THRESHOLD), None)
    detail = f"{how} of {len(scores)} step scores" + (
        "" if first_low is None else f"; first low step: {first_low}"
    )
    return RewardComponent("prm", RewardKind.PROCESS, aggregate(scores, how), weight, detail=detail), scores
