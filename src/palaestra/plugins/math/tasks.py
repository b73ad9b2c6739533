"""Math tasks: JSONL loaders for the common public shapes and seeded procedural generators.

A generator maps (index, difficulty, split) to one task, deterministically, so every seed names a task
and a curriculum only has to raise `difficulty` (1 = easiest ... 5 = hardest). Difficulty 0 is a
first rung below that for arithmetic only, for tiny models: two-digit addition without carrying. The
other generators treat 0 as 1. The gold answer is computed with exact rational arithmetic from the
generated structure, never by evaluating text.

Splits are disjoint by problem, not by seed: every problem belongs to exactly one split, chosen by a
hash of its canonical key (`problem_key`), and a generator draws from its seed's stream until it meets
a problem of the requested split. The key ignores difficulty and generator, so a problem never changes
split between levels.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

from palaestra.plugins.math.extract import last_boxed

MIN_DIFFICULTY, MAX_DIFFICULTY = 0, 5


@dataclass(frozen=True)
class Task:
    id: str
    problem: str
    answer: str  # the gold answer, as text math-verify can parse (or a letter for multiple choice)
    solution: str = ""  # a worked solution, when the source has one
    choices: tuple[str, ...] = ()  # multiple choice: option texts, labelled A, B, C, ...
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


# ---------------------------------------------------------------- loaders


class DatasetError(ValueError):
    """A data file is missing or a record does not have the fields its format needs."""


def _gsm8k_record(record: dict[str, Any], index: int) -> Task:
    solution = str(record["answer"])
    if "####" not in solution:
        raise DatasetError("GSM8K-style answer has no '#### <answer>' line")
    reasoning, _, final = solution.rpartition("####")
    gold = final.strip().replace(",", "")
    return Task(
        id=str(record.get("id", index)),
        problem=str(record["question"]),
        answer=gold,
        solution=reasoning.strip(),
    )


def _math_record(record: dict[str, Any], index: int) -> Task:
    solution = str(record["solution"])
    gold = record.get("answer") or last_boxed(solution)
    if not gold:
        raise DatasetError("MATH-style solution has no \\boxed{} answer and there is no 'answer' field")
    meta: dict[str, Any] = {key: record[key] for key in ("level", "type", "subject") if key in record}
    return Task(
        id=str(record.get("id", index)),
        problem=str(record["problem"]),
        answer=str(gold),
        solution=solution,
        meta=meta,
    )


def _qa_record(record: dict[str, Any], index: int) -> Task:
    choices = tuple(str(c) for c in record.get("choices", ()))
    return Task(
        id=str(record.get("id", index)),
        problem=str(record["question"]),
        answer=str(record["answer"]).strip(),
        solution=str(record.get("solution", "")),
        choices=choices,
    )


RECORD_PARSERS: dict[str, Callable[[dict[str, Any], int], Task]] = {
    "gsm8k": _gsm8k_record,
    "math": _math_record,
    "qa": _qa_record,
}


def parse_records(lines: Iterable[str], fmt: str, source: str = "<data>") -> list[Task]:
    if fmt not in RECORD_PARSERS:
        raise DatasetError(f"unknown dataset format {fmt!r}; known: {', '.join(RECORD_PARSERS)}")
    tasks: list[Task] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            tasks.append(RECORD_PARSERS[fmt](json.loads(line), len(tasks)))
        except (KeyError, json.JSONDecodeError, DatasetError) as exc:
            raise DatasetError(f"{source}:{number}: not a {fmt} record: {exc}") from exc
    if not tasks:
        raise DatasetError(f"{source}: no records")
    return tasks


def load_jsonl(path: str | Path, fmt: str) -> list[Task]:
    """Load a JSONL file: fmt is 'gsm8k' (question/answer with ####), 'math' (problem/solution with a
    boxed answer) or 'qa' (question/answer, optional choices)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    with path.open(encoding="utf-8") as handle:
        return parse_records(handle, fmt, str(path))


def load_sample(name: str, fmt: str) -> list[Task]:
    """Load one of the small JSONL samples shipped inside this package."""
    text = resources.files("palaestra.plugins.math").joinpath("data", name).read_text(encoding="utf-8")
    return parse_records(text.splitlines(), fmt, f"sample {name}")


# ---------------------------------------------------------------- splits

SPLITS = ("train", "test")
TEST_SHARE = 0.2  # the share of problems (by key) that belong to the test split
MAX_DRAWS = 1000  # a generator gives up after this many draws outside its split (never seen: ~5 suffice)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    return split


def _key_hash(key: str) -> float:
    """A uniform number in [0, 1) that depends only on the key."""
    digest = hashlib.sha256(f"palaestra-split:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def canonical_expression(expression: str) -> str:
    """The key of an arithmetic problem: its text, with the two operands of a lone `+` or `*` sorted,
    so that `3 + 5` and `5 + 3` are one problem. Longer expressions are keyed by their text."""
    parts = expression.split(" ")
    if len(parts) == 3 and parts[1] in ("+", "*"):
        left, right = sorted((parts[0], parts[2]))
        return f"{left} {parts[1]} {right}"
    return expression


def problem_key(task: Task) -> str:
    """What makes two problems the same: the canonical expression of generated arithmetic, else the text."""
    expression = task.meta.get("expression")
    return canonical_expression(expression) if expression else task.problem


def problem_split(key: str) -> str:
    """The split that owns a problem: 'test' for a fixed TEST_SHARE of keys (by hash), else 'train'."""
    return "test" if _key_hash(key) < TEST_SHARE else "train"


def _in_split(
    kind: str, index: int, difficulty: int, split: str, draw: Callable[[random.Random], Task]
) -> Task:
    """The first problem of this seed's stream that belongs to `split`, with a stable id."""
    rng = task_rng(kind, index, difficulty, check_split(split))
    for _ in range(MAX_DRAWS):
        task = draw(rng)
        if problem_split(problem_key(task)) == split:
            return replace(task, id=f"{kind}-{split}-d{difficulty}-{index}")
    raise RuntimeError(f"no {split} problem for {kind} difficulty {difficulty} in {MAX_DRAWS} draws")


# ---------------------------------------------------------------- generators


def task_rng(kind: str, index: int, difficulty: int, split: str) -> random.Random:
    """A random generator that depends only on its arguments (stable across processes and versions)."""
    digest = hashlib.sha256(f"{kind}:{split}:{difficulty}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def format_number(value: Fraction) -> str:
    """An exact answer: an integer, or a reduced fraction such as -3/4."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _term(value: Fraction) -> str:
    text = format_number(value)
    return f"({text})" if value < 0 or value.denominator != 1 else text


_OPS: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}


def _operand(rng: random.Random, difficulty: int, fractions: bool) -> Fraction:
    bound = 10 ** min(difficulty, 3)
    if fractions:
        denominator = rng.randint(2, 3 + 2 * difficulty)
        return Fraction(rng.randint(-bound // 2, bound), denominator) or Fraction(1, denominator)
    value = rng.randint(-bound // 4 if difficulty >= 3 else 1, bound)
    return Fraction(value)


def _arithmetic(rng: random.Random, difficulty: int, fractions: bool) -> Task:
    kind = "fractions" if fractions else "arithmetic"
    operand_count = 1 + difficulty + (1 if difficulty >= 4 else 0)
    value = _operand(rng, difficulty, fractions)
    text, atomic = _term(value), True
    divisions = 0
    for _ in range(operand_count - 1):
        op = rng.choice(list(_OPS))
        right = _operand(rng, difficulty, fractions)
        if difficulty >= 3 and divisions < 2 and rng.random() < 0.3 and right != 0:
            op, divisions = "/", divisions + 1
        value = value / right if op == "/" else _OPS[op](value, right)
        # Parenthesise the running expression before * and / so that the written order is the computed one.
        left = text if atomic or op in "+-" else f"({text})"
        text, atomic = f"{left} {op} {_term(right)}", False
    noun = (
        "exact value (as a reduced fraction if it is not an integer)" if fractions or "/" in text else "value"
    )
    return Task(
        id="",  # set by _in_split
        problem=f"Compute the {noun} of {text}.",
        answer=format_number(value),
        meta={"difficulty": difficulty, "generator": kind, "expression": text},
    )


def _two_digit_sum(rng: random.Random) -> Task:
    # Digit by digit: tens digits 1-8 adding up to at most 9, units digits adding up to at most 9.
    left_tens = rng.randint(1, 8)
    right_tens = rng.randint(1, 9 - left_tens)
    left_units = rng.randint(0, 9)
    right_units = rng.randint(0, 9 - left_units)
    left, right = 10 * left_tens + left_units, 10 * right_tens + right_units
    return Task(
        id="",  # set by _in_split
        problem=f"Compute the value of {left} + {right}.",
        answer=str(left + right),
        meta={"difficulty": 0, "generator": "arithmetic", "expression": f"{left} + {right}"},
    )


def two_digit_addition(index: int, split: str) -> Task:
    """Difficulty 0: `ab + cd`, two two-digit numbers whose digits add without carrying (36 x 55 =
    1,980 problems, 990 up to order; answers 20-99). Each digit of the answer is the sum of the two
    digits above it, so a policy that learns to add digits on training problems can solve test problems
    it has never seen, which a split of a smaller space (such as the 55 single-digit sums) cannot show."""
    return _in_split("arithmetic", index, 0, split, _two_digit_sum)


def arithmetic_task(index: int, difficulty: int = 1, split: str = "train") -> Task:
    if difficulty == 0:
        return two_digit_addition(index, split)
    return _in_split(
        "arithmetic", index, difficulty, split, lambda rng: _arithmetic(rng, difficulty, fractions=False)
    )


def fraction_task(index: int, difficulty: int = 1, split: str = "train") -> Task:
    difficulty = max(difficulty, 1)
    return _in_split(
        "fractions", index, difficulty, split, lambda rng: _arithmetic(rng, difficulty, fractions=True)
    )


def _linear_side(coefficient: int, constant: int) -> str:
    parts = []
    if coefficient:
        parts.append("x" if coefficient == 1 else "-x" if coefficient == -1 else f"{coefficient}x")
    if constant or not parts:
        parts.append(f"{constant}" if not parts else f"{'+' if constant > 0 else '-'} {abs(constant)}")
    return " ".join(parts)


def linear_task(index: int, difficulty: int = 1, split: str = "train") -> Task:
    """a*x + b = c*x + d with a known solution (a fraction from difficulty 4 on)."""
    difficulty = max(difficulty, 1)  # no level 0 here: treated as the easiest level
    return _in_split("linear", index, difficulty, split, lambda rng: _linear(rng, difficulty))


def _linear(rng: random.Random, difficulty: int) -> Task:
    bound = 5 * difficulty
    solution = Fraction(rng.randint(-bound, bound))
    if difficulty >= 4:
        solution /= rng.randint(2, 7)
    a = rng.choice([k for k in range(-bound, bound + 1) if k != 0])
    c = rng.randint(-bound, bound) if difficulty >= 2 else 0
    if c == a:
        c = 0
    b = rng.randint(-bound * 2, bound * 2)
    # Choose d so that the solution holds, then clear denominators by scaling the whole equation.
    d_exact = (a - c) * solution + b
    scale = d_exact.denominator
    a, b, c, d = a * scale, b * scale, c * scale, int(d_exact * scale)
    equation = f"{_linear_side(a, b)} = {_linear_side(c, d)}"
    return Task(
        id="",  # set by _in_split
        problem=f"Solve for x: {equation}",
        answer=format_number(solution),
        solution=f"{_linear_side(a - c, 0)} = {d - b}\nx = {format_number(solution)}",
        meta={"difficulty": difficulty, "generator": "linear"},
    )


def _polynomial(a: int, b: int, c: int) -> str:
    text = "x^2" if a == 1 else "-x^2" if a == -1 else f"{a}x^2"
    for coefficient, power in ((b, "x"), (c, "")):
        if coefficient == 0:
            continue
        magnitude = abs(coefficient)
        body = power if magnitude == 1 and power else f"{magnitude}{power}"
        text += f" {'+' if coefficient > 0 else '-'} {body}"
    return text


def quadratic_task(index: int, difficulty: int = 1, split: str = "train") -> Task:
    """a*(x - r1)*(x - r2) = 0 expanded; rational roots from difficulty 4 on."""
    difficulty = max(difficulty, 1)  # no level 0 here: treated as the easiest level
    return _in_split("quadratic", index, difficulty, split, lambda rng: _quadratic(rng, difficulty))


def _quadratic(rng: random.Random, difficulty: int) -> Task:
    bound = 3 + 2 * difficulty
    roots = [Fraction(rng.randint(-bound, bound)) for _ in range(2)]
    leading = 1 if difficulty <= 2 else rng.choice([1, 2, 3, -1, -2])
    if difficulty >= 4:
        roots[1] = Fraction(rng.randint(-bound, bound), rng.choice([2, 3]))
    # a(x - r1)(x - r2) = a x^2 - a(r1 + r2) x + a r1 r2; scale to integer coefficients.
    scale = (roots[0] * roots[1]).denominator * (roots[0] + roots[1]).denominator
    a = leading * scale
    b, c = -a * (roots[0] + roots[1]), a * roots[0] * roots[1]
    distinct = sorted(set(roots))
    return Task(
        id="",  # set by _in_split
        problem=f"Find all real solutions of {_polynomial(a, int(b), int(c))} = 0. "
        "If there are several, list them separated by commas.",
        answer=", ".join(format_number(r) for r in distinct),
        meta={"difficulty": difficulty, "generator": "quadratic"},
    )


_NAMES = ("Ada", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun")
_ITEMS = (("apple", "apples"), ("pencil", "pencils"), ("sticker", "stickers"), ("marble", "marbles"))


def _word_shopping(rng: random.Random, difficulty: int) -> tuple[str, Fraction, str]:
    name = rng.choice(_NAMES)
    singular, plural = rng.choice(_ITEMS)
    count, price = rng.randint(2, 4 * difficulty + 3), rng.randint(1, 5 * difficulty)
    paid = (count * price // 10 + 1) * 10 + rng.choice([0, 10, 20])
    change = paid - count * price
    text = (
        f"{name} buys {count} {plural} at ${price} per {singular} and pays with ${paid}. "
        f"How many dollars of change does {name} get?"
    )
    return text, Fraction(change), f"{count} * {price} = {count * price}\n{paid} - {count * price} = {change}"


def _word_travel(rng: random.Random, difficulty: int) -> tuple[str, Fraction, str]:
    name = rng.choice(_NAMES)
    speed, hours = rng.randint(3, 20 * difficulty), rng.randint(2, 3 + difficulty)
    rest = rng.randint(1, hours - 1)
    first, second = speed * rest, speed * (hours - rest)
    text = (
        f"{name} cycles at {speed} km per hour for {rest} hours, takes a break, then cycles "
        f"{hours - rest} more hours at the same speed. How many kilometres does {name} cycle in total?"
    )
    return (
        text,
        Fraction(first + second),
        "\n".join(
            (
                f"{speed} * {rest} = {first}",
                f"{speed} * {hours - rest} = {second}",
                f"{first} + {second} = {first + second}",
            )
        ),
    )


def _word_sharing(rng: random.Random, difficulty: int) -> tuple[str, Fraction, str]:
    name, friend = rng.sample(_NAMES, 2)
    _, plural = rng.choice(_ITEMS)
    people = rng.randint(2, 2 + difficulty)
    each = rng.randint(2, 6 * difficulty)
    kept = rng.randint(1, 9)
    total = people * each + kept
    text = (
        f"{name} has {total} {plural}, keeps {kept}, and shares the rest equally among {people} friends, "
        f"one of whom is {friend}. How many {plural} does {friend} get?"
    )
    return text, Fraction(each), f"{total} - {kept} = {total - kept}\n{total - kept} / {people} = {each}"


def _word_percent(rng: random.Random, difficulty: int) -> tuple[str, Fraction, str]:
    name = rng.choice(_NAMES)
    price = rng.randint(2, 10 * difficulty) * 10
    percent = rng.choice([10, 20, 25, 50])
    discount = Fraction(price * percent, 100)
    paid = price - discount
    text = f"A coat costs ${price}. {name} gets a {percent}% discount. How many dollars does {name} pay?"
    steps = (
        f"{price} * {percent} / 100 = {format_number(discount)}",
        f"{price} - {format_number(discount)} = {format_number(paid)}",
    )
    return text, paid, "\n".join(steps)


_WORD_TEMPLATES = (_word_shopping, _word_travel, _word_sharing, _word_percent)


def word_task(index: int, difficulty: int = 1, split: str = "train") -> Task:
    difficulty = max(difficulty, 1)  # no level 0 here: treated as the easiest level
    return _in_split("word", index, difficulty, split, lambda rng: _word(rng, difficulty))


def _word(rng: random.Random, difficulty: int) -> Task:
    template = _WORD_TEMPLATES[rng.randrange(len(_WORD_TEMPLATES))]
    problem, answer, solution = template(rng, difficulty)
    return Task(
        id="",  # set by _in_split
        problem=problem,
        answer=format_number(answer),
        solution=solution,
        meta={
            "difficulty": difficulty,
            "generator": "word",
            "template": template.__name__.removeprefix("_word_"),
        },
    )


GENERATORS: dict[str, Callable[[int, int, str], Task]] = {
    "arithmetic": arithmetic_task,
    "fractions": fraction_task,
    "linear": linear_task,
    "quadratic": quadratic_task,
    "word": word_task,
}


def mixed_task(index: int, difficulty: int = 1, split: str = "train") -> Task:
    kinds = sorted(GENERATORS)
    kind = kinds[task_rng("mixed", index, difficulty, check_split(split)).randrange(len(kinds))]
    return GENERATORS[kind](index, difficulty, split)


def clamp_difficulty(value: Any) -> int:
    try:
        level = int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"difficulty must be an integer from {MIN_DIFFICULTY} to {MAX_DIFFICULTY}, not {value!r}"
        ) from None
    if not MIN_DIFFICULTY <= level <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty must be from {MIN_DIFFICULTY} to {MAX_DIFFICULTY}, not {level}")
    return level


NUMBER_IN_ANSWER = re.compile(r"-?\d+(?:/\d+)?")
