"""The reward mixer: components -> per-turn credit and group-normalised advantages."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from palaestra.agents.rewards import RewardMixer, drop_infra_failures, group_turn_advantages, returns_to_go
from palaestra.types import ComponentStatus, InfraFailure, RewardComponent, RewardKind


def c(
    kind: RewardKind, value: float, weight: float = 1.0, status: ComponentStatus = ComponentStatus.OK
) -> RewardComponent:
    return RewardComponent(kind.name.lower(), kind, value, weight, status)


def test_outcome_goes_to_the_last_turn_and_process_credit_stays_on_its_turn() -> None:
    mixer = RewardMixer()
    turns = [
        [c(RewardKind.PROCESS, 0.5)],
        [c(RewardKind.OUTCOME, 1.0), c(RewardKind.CHECKLIST, 0.25)],  # outcome reported early...
        [c(RewardKind.FORMAT, 0.1)],
    ]
    assert mixer.turn_rewards(turns) == pytest.approx([0.5, 0.25, 1.1])  # ...is credited to the last turn


def test_kind_weights_component_weights_and_failed_components() -> None:
    weights = dict.fromkeys(RewardKind, 1.0) | {RewardKind.PROCESS: 0.5, RewardKind.PENALTY: 2.0}
    mixer = RewardMixer(kind_weights=weights)
    turns = [
        [c(RewardKind.PROCESS, 1.0, weight=0.4), c(RewardKind.PROCESS, 1.0, status=ComponentStatus.TIMEOUT)],
        [c(RewardKind.PENALTY, -0.1), c(RewardKind.OUTCOME, 1.0, status=ComponentStatus.ERROR)],
    ]
    # 0.5 * 0.4 * 1.0; the timed-out process score and the errored outcome count nothing (not 0-as-wrong).
    assert mixer.turn_rewards(turns) == pytest.approx([0.2, -0.2])


def test_gated_accumulation_drops_step_credit_when_the_outcome_fails() -> None:
    mixer = RewardMixer(gate=0.5)
    failed = [[c(RewardKind.PROCESS, 1.0)], [c(RewardKind.PENALTY, -0.5), c(RewardKind.OUTCOME, 0.0)]]
    solved = [[c(RewardKind.PROCESS, 1.0)], [c(RewardKind.OUTCOME, 1.0)]]
    assert mixer.turn_rewards(failed) == pytest.approx([0.0, -0.5])  # penalties are never gated
    assert mixer.turn_rewards(solved) == pytest.approx([1.0, 1.0])


def test_the_gate_never_turns_a_penalty_into_credit() -> None:
    """A reply without a code block: FORMAT -1 (weight 0.5), outcome 0. Gated or not, it costs 0.5."""
    no_code = [[c(RewardKind.FORMAT, -1.0, weight=0.5), c(RewardKind.OUTCOME, 0.0)]]
    assert RewardMixer().turn_rewards(no_code) == pytest.approx([-0.5])
    assert RewardMixer(gate=0.5).turn_rewards(no_code) == pytest.approx([-0.5])
    # Negative process and checklist credit stay too; positive step credit is what the gate drops.
    mixed = [[c(RewardKind.PROCESS, -0.25), c(RewardKind.CHECKLIST, 0.5)], [c(RewardKind.OUTCOME, 0.0)]]
    assert RewardMixer(gate=0.5).turn_rewards(mixed) == pytest.approx([-0.25, 0.0])


def test_single_turn_advantages_are_group_normalised_rewards() -> None:
    advantages = group_turn_advantages([[1.0], [0.0], [0.0], [1.0]])
    assert [a[0] for a in advantages] == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=1e-3)
    same = group_turn_advantages([[1.0], [1.0]])
    assert same == [[0.0], [0.0]]  # no contrast, no signal


def test_multi_turn_advantages_use_returns_to_go_with_a_per_turn_baseline() -> None:
    assert returns_to_go([0.5, 0.0, 1.0]) == [1.5, 1.0, 1.0]
    group = [[0.5, 1.0], [0.0, 1.0], [0.0, 0.0]]
    advantages = group_turn_advantages(group, scale_by_std=False)
    # turn 0 baseline: mean(1.5, 1.0, 0.0); turn 1 baseline: mean(1.0, 1.0, 0.0)
    assert advantages[0] == pytest.approx([1.5 - 2.5 / 3, 1.0 - 2 / 3])
    assert advantages[2] == pytest.approx([0.0 - 2.5 / 3, 0.0 - 2 / 3])
    # The episode that earned process credit on turn 0 gets more credit on that turn than its peer.
    assert advantages[0][0] > advantages[1][0]
    assert advantages[0][1] == pytest.approx(advantages[1][1])


@dataclass
class Episode:
    name: str
    infra_failure: InfraFailure | None = None


def test_infra_failures_are_dropped_not_scored() -> None:
    broken = InfraFailure("sandbox", "container died")
    groups = [
        [Episode("a"), Episode("b", broken), Episode("c")],
        [Episode("d", broken), Episode("e")],  # one healthy episode left: nothing to compare with
    ]
    kept, dropped = drop_infra_failures(groups)
    assert [[e.name for e in g] for g in kept] == [["a", "c"]]
    assert dropped == 3
