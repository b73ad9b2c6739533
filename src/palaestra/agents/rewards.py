"""The reward mixer: reward components in, per-turn (and so per-token) credit and advantages out.

Environments report rewards as typed components (OUTCOME, PROCESS, CHECKLIST, FORMAT, PENALTY) on the
step that follows each policy turn. The mixer turns them into credit:

1. Each OK component counts ``kind_weight[kind] * component.weight * component.value``; components with
   status TIMEOUT/ERROR/NOT_RUN count nothing (they were not computed, which is not the same as 0).
2. OUTCOME credit goes to the LAST policy turn (its last token), wherever it arrived.
3. PROCESS, CHECKLIST and FORMAT credit stay on the turn whose action earned them; PENALTY too.
4. Gated accumulation (optional, after G-RA): when ``gate`` is set and the episode's outcome credit is
   below it, positive PROCESS/CHECKLIST/FORMAT credit is dropped, so the policy cannot farm step rewards
   while failing the task. Negative credit is never gated: PENALTY components, FORMAT penalties (by the
   convention every plugin follows, FORMAT is 0 for a well-formed reply and negative otherwise) and
   negative process credit always count, so the gate never turns a penalty into credit.

Checklist item results (`AgentResult.checklist`) are evidence for logs; environments also report their
credit as CHECKLIST components, which is what the mixer counts (so nothing is counted twice).

Advantages (GRPO): with ``G_k`` the return-to-go from turn k of an episode, every token of turn k gets
``(G_k - mean of G_k over the group's episodes that reached turn k) / (std of the group's returns + eps)``.
For single-turn episodes this is exactly the group-normalised GRPO advantage.

Episodes whose infrastructure failed are never scored: `drop_infra_failures` removes them before any of
this, and a group left with fewer than two episodes carries no learning signal and is dropped too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from palaestra.types import ComponentStatus, InfraFailure, RewardComponent, RewardKind

_GATED = (RewardKind.PROCESS, RewardKind.CHECKLIST, RewardKind.FORMAT)


def _default_weights() -> dict[RewardKind, float]:
    return dict.fromkeys(RewardKind, 1.0)


@dataclass
class RewardMixer:
    kind_weights: dict[RewardKind, float] = field(default_factory=_default_weights)
    gate: float | None = None

    def credit(self, component: RewardComponent) -> float:
        if component.status is not ComponentStatus.OK:
            return 0.0
        return self.kind_weights.get(component.kind, 1.0) * component.weight * component.value

    def turn_rewards(self, turns: Sequence[Sequence[RewardComponent]]) -> list[float]:
        """Credit per policy turn; `turns[k]` holds the components returned after turn k."""
        if not turns:
            return []
        rewards = [0.0] * len(turns)
        outcome = sum(self.credit(c) for step in turns for c in step if c.kind is RewardKind.OUTCOME)
        gated_off = self.gate is not None and outcome < self.gate
        for index, step in enumerate(turns):
            for component in step:
                if component.kind is RewardKind.OUTCOME:
                    continue
                credit = self.credit(component)
                if gated_off and component.kind in _GATED and credit > 0:
                    continue  # only credit is gated; a penalty stays a penalty
                rewards[index] += credit
        rewards[-1] += outcome
        return rewards

    def component_totals(self, turns: Sequence[Sequence[RewardComponent]]) -> dict[str, float]:
        """Raw (unweighted by kind) totals per component name, for metrics and plots."""
        totals: dict[str, float] = {}
        for step in turns:
            for component in step:
                if component.status is ComponentStatus.OK:
                    totals[component.name] = totals.get(component.name, 0.0) + component.value
        return totals


def returns_to_go(rewards: Sequence[float]) -> list[float]:
    out: list[float] = []
    running = 0.0
    for reward in reversed(rewards):
        running += reward
        out.append(running)
    return out[::-1]


def group_turn_advantages(
    group: Sequence[Sequence[float]], *, scale_by_std: bool = True, eps: float = 1e-4
) -> list[list[float]]:
    """Per-turn advantages for one group of episodes of the same task (see the module docstring)."""
    to_go = [returns_to_go(rewards) for rewards in group]
    episode_returns = [values[0] if values else 0.0 for values in to_go]
    mean_return = sum(episode_returns) / len(episode_returns)
    std = math.sqrt(sum((r - mean_return) ** 2 for r in episode_returns) / len(episode_returns))
    scale = 1.0 / (std + eps) if scale_by_std else 1.0
    longest = max((len(values) for values in to_go), default=0)
    baselines = []
    for turn in range(longest):
        reached = [values[turn] for values in to_go if len(values) > turn]
        baselines.append(sum(reached) / len(reached))
    return [[(value - baselines[turn]) * scale for turn, value in enumerate(values)] for values in to_go]


class HasInfraFailure(Protocol):
    @property
    def infra_failure(self) -> InfraFailure | None: ...


T = TypeVar("T", bound=HasInfraFailure)


def drop_infra_failures(groups: Sequence[Sequence[T]]) -> tuple[list[list[T]], int]:
    """Remove episodes with an infrastructure failure; drop groups left too small to compare.

    Returns the kept groups and how many episodes were dropped (for metrics).
    """
    kept: list[list[T]] = []
    dropped = 0
    for group in groups:
        healthy = [episode for episode in group if episode.infra_failure is None]
        dropped += len(group) - len(healthy)
        if len(healthy) >= 2:
            kept.append(healthy)
        else:
            dropped += len(healthy)
    return kept, dropped
