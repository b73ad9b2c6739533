"""Task generators (deterministic by seed, answers checked independently) and JSONL loaders."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from palaestra.plugins.math.settings import MathSettings, merge
from palaestra.plugins.math.steps import check_steps, evaluate
from palaestra.plugins.math.tasks import (
    GENERATORS,
    DatasetError,
    Task,
    arithmetic_task,
    canonical_expression,
    clamp_difficulty,
    load_jsonl,
    load_sample,
    mixed_task,
    problem_key,
    problem_split,
)


@pytest.mark.parametrize("kind", [*GENERATORS, "mixed"])
@pytest.mark.parametrize("difficulty", [1, 3, 5])
def test_generators_are_deterministic_by_index(kind: str, difficulty: int) -> None:
    generate = mixed_task if kind == "mixed" else GENERATORS[kind]
    first = [generate(i, difficulty, "train") for i in range(20)]
    again = [generate(i, difficulty, "train") for i in range(20)]
    assert first == again
    assert len({t.problem for t in first}) >= 15, "different indices give (mostly) different problems"
    assert all(t.answer for t in first)


def test_splits_and_difficulties_differ() -> None:
    train = [GENERATORS["arithmetic"](i, 2, "train").problem for i in range(10)]
    test = [GENERATORS["arithmetic"](i, 2, "test").problem for i in range(10)]
    assert train != test
    easy = GENERATORS["arithmetic"](0, 1, "train").problem
    hard = GENERATORS["arithmetic"](0, 5, "train").problem
    assert len(hard) > len(easy)


def _expression(task: Task) -> str:
    return task.problem.split(" of ", 1)[1].rstrip(".")


@pytest.mark.parametrize("kind", ["arithmetic", "fractions"])
def test_arithmetic_answers_match_an_independent_evaluation(kind: str) -> None:
    for difficulty in range(1, 6):
        for index in range(25):
            task = GENERATORS[kind](index, difficulty, "train")
            assert evaluate(_expression(task)) == Fraction(task.answer), task


def _substitute(side: str, value: str) -> str:
    """Put the value in for x: '6x + 9' -> '6*(13) + 9', '-x' -> '-1*(13)'."""
    x = f"({value})"
    text = side.replace("-x", f"-1*{x}").replace("x", f"*{x}").lstrip("*")
    return text.replace(" *", " 1*").replace("(*", "(1*")


def test_linear_answers_solve_the_equation() -> None:
    for difficulty in range(1, 6):
        for index in range(25):
            task = GENERATORS["linear"](index, difficulty, "train")
            left, right = task.problem.removeprefix("Solve for x: ").split(" = ")
            fixed = [_substitute(side, task.answer) for side in (left, right)]
            assert evaluate(fixed[0]) == evaluate(fixed[1]), task


def test_quadratic_roots_are_roots() -> None:
    for difficulty in range(1, 6):
        for index in range(25):
            task = GENERATORS["quadratic"](index, difficulty, "train")
            polynomial = task.problem.removeprefix("Find all real solutions of ").split(" = 0")[0]
            for root in task.answer.split(", "):
                x = f"({root})"
                text = polynomial.replace("-x", f"-1*{x}").replace("x", f"*{x}")
                text = text.replace(" *", " 1*").lstrip("*").replace("^", "**")
                assert evaluate(text) == 0, (task, root)


def test_word_problem_solutions_check_out() -> None:
    for difficulty in range(1, 6):
        for index in range(25):
            task = GENERATORS["word"](index, difficulty, "train")
            report = check_steps(task.solution)
            assert report.score == 1.0 and report.first_wrong_step is None, task
            assert task.solution.splitlines()[-1].endswith(f"= {task.answer}")


def test_difficulty_zero_is_two_digit_addition_without_carrying() -> None:
    tasks = [arithmetic_task(i, 0, split) for split in ("train", "test") for i in range(3000)]
    for task in tasks:
        left, right = (int(n) for n in _expression(task).split(" + "))
        assert 10 <= left <= 99 and 10 <= right <= 99, task
        assert left // 10 + right // 10 <= 9 and left % 10 + right % 10 <= 9, task  # no carry
        assert task.answer == str(left + right) and evaluate(_expression(task)) == left + right
        assert task.problem == f"Compute the value of {task.meta['expression']}."
    keys = {problem_key(t) for t in tasks}
    assert len(keys) > 900  # of the 990 problems up to order: a space big enough to split
    answers = {int(t.answer) for t in tasks}
    assert answers <= set(range(20, 100)) and len(answers) > 70


@pytest.mark.parametrize("kind", [*GENERATORS, "mixed"])
@pytest.mark.parametrize("difficulty", range(6))
def test_test_problems_never_occur_in_training(kind: str, difficulty: int) -> None:
    generate = mixed_task if kind == "mixed" else GENERATORS[kind]
    train = [generate(i, difficulty, "train") for i in range(300)]
    test = [generate(i, difficulty, "test") for i in range(300)]
    assert all(problem_split(problem_key(t)) == "train" for t in train)
    assert all(problem_split(problem_key(t)) == "test" for t in test)
    assert not {t.problem for t in train} & {t.problem for t in test}
    assert not {problem_key(t) for t in train} & {problem_key(t) for t in test}
    assert len({t.problem for t in test}) >= min(8, len({t.problem for t in train}) // 8)


def test_problem_keys_ignore_operand_order_of_a_lone_sum_or_product() -> None:
    assert canonical_expression("5 + 3") == canonical_expression("3 + 5") == "3 + 5"
    assert canonical_expression("(-2) * 7") == canonical_expression("7 * (-2)")
    assert canonical_expression("5 - 3") != canonical_expression("3 - 5")
    assert canonical_expression("1 + 2 + 3") == "1 + 2 + 3"
    # Difficulty 1 has 300 problems (two operands 1-10, one of + - *): the splits share none.
    train = {problem_key(arithmetic_task(i, 1, "train")) for i in range(3000)}
    test = {problem_key(arithmetic_task(i, 1, "test")) for i in range(3000)}
    # 100 differences, and 55 sums and 55 products up to order.
    assert not train & test and len(train) + len(test) == 210


def test_unknown_splits_are_refused() -> None:
    with pytest.raises(ValueError, match="split must be one of train, test"):
        arithmetic_task(0, 1, "validation")
    with pytest.raises(ValueError, match="split must be one of"):
        merge(MathSettings(), {"split": "dev"})


def test_generators_without_a_level_zero_treat_it_as_one() -> None:
    for kind in ("fractions", "linear", "quadratic", "word"):
        assert GENERATORS[kind](3, 0, "train") == GENERATORS[kind](3, 1, "train")


def test_difficulty_is_validated() -> None:
    assert clamp_difficulty("3") == 3
    assert clamp_difficulty(0) == 0
    for bad in (-1, 6, "hard", None):
        with pytest.raises(ValueError):
            clamp_difficulty(bad)


def test_shipped_samples_load() -> None:
    gsm8k = load_sample("gsm8k_sample.jsonl", "gsm8k")
    assert len(gsm8k) == 5 and gsm8k[0].answer == "7" and "####" not in gsm8k[0].solution
    math = load_sample("math_sample.jsonl", "math")
    assert (
        math[0].answer == "\\frac{19}{12}" and math[1].answer == "2, 3" and math[0].meta["level"] == "Level 1"
    )
    qa = load_sample("qa_sample.jsonl", "qa")
    assert qa[2].choices == ("21", "27", "29", "33") and qa[2].answer == "C"


def test_loaders_read_user_files_and_report_bad_records(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "answer": "It is 4.\n#### 4"}) + "\n\n")
    [task] = load_jsonl(path, "gsm8k")
    assert (task.answer, task.solution, task.id) == ("4", "It is 4.", "0")
    path.write_text(json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    with pytest.raises(DatasetError, match=r"data.jsonl:1"):
        load_jsonl(path, "gsm8k")
    path.write_text(json.dumps({"problem": "p", "solution": "no box"}) + "\n")
    with pytest.raises(DatasetError, match="boxed"):
        load_jsonl(path, "math")
    with pytest.raises(DatasetError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl", "qa")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_jsonl(path, "csv")
