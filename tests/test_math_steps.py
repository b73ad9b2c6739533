"""The rule-based step checker and its safe arithmetic evaluator."""

from __future__ import annotations

from fractions import Fraction

import pytest

from palaestra.plugins.math.steps import NotArithmetic, check_steps, evaluate, find_claims, split_steps


def test_evaluator_is_exact() -> None:
    assert evaluate("1/3 + 1/6") == Fraction(1, 2)
    assert evaluate("2^10 - (3 * -4)") == 1036
    assert evaluate("0.1 + 0.2") == Fraction(3, 10)


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os').system('true')",
        "(1).__class__",
        "[1, 2]",
        "9 ** 99999",
        "2 ^ 2 ^ 2 ^ 2 ^ 2 ^ 2",
        "1 / 0",
        "x + 1",
        "1 + " * 200 + "1",
    ],
)
def test_evaluator_refuses_anything_else(hostile: str) -> None:
    with pytest.raises(NotArithmetic):
        evaluate(hostile)


def test_claims_in_prose_and_latex() -> None:
    claims = find_claims("So 5 + 3 = 8 apples, and $\\frac{9}{12} + \\frac{10}{12} = \\frac{19}{12}$.")
    assert [c.correct for c in claims] == [True, True]
    [wrong] = find_claims("Then 7 \\times 6 = 43.")
    assert not wrong.correct and wrong.left_value == "42"
    assert find_claims("2x + 3 = 7 so x = 2") == []  # symbolic: not an arithmetic claim
    assert find_claims("x^2 = 4 and a_1 + 2 = 4") == []
    assert [c.correct for c in find_claims("48/2 = <<48/2=24>>24")] == [True]  # one claim, not two
    assert [c.correct for c in find_claims("$1,200 \u00d7 3 = $3,600")] == [True]


def test_rounded_right_hand_sides() -> None:
    assert find_claims("10/3 = 3.33")[0].correct
    assert not find_claims("10/3 = 3.4")[0].correct
    assert not find_claims("10/3 = 3")[0].correct


def test_steps_are_split_by_markers_lines_or_sentences() -> None:
    assert split_steps("Step 1: a. Step 2: b.") == ["a.", "b."]
    assert split_steps("first\n\nsecond") == ["first", "second"]
    assert split_steps("One thing. Another thing.") == ["One thing.", "Another thing."]


def test_report_scores_steps_and_finds_the_first_wrong_one() -> None:
    report = check_steps("We have 3 boxes.\n3 * 12 = 36\n36 - 9 = 28\n28 + 5 = 33\nSo \\boxed{33}")
    assert [s.score for s in report.steps] == [None, 1.0, 0.0, 1.0, None]
    assert report.first_wrong_step is not None and report.first_wrong_step.index == 2
    assert report.score == pytest.approx(2 / 3)
    assert check_steps("no arithmetic here").score is None
