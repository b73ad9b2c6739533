"""A rule-based process checker: split a solution into steps and check its arithmetic claims.

A claim is `expr = value` where both sides are plain arithmetic (numbers, + - * / ^, parentheses,
LaTeX \\times \\cdot \\div \\frac). Claims are evaluated exactly with fractions by a small evaluator that
walks Python's AST and accepts only those operations - nothing is ever `eval`-ed - with bounds on
length, exponents and the size of numbers, so a hostile solution cannot make it slow.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass, field
from fractions import Fraction

MAX_CLAIM_CHARS = 200
MAX_CLAIMS = 200
MAX_EXPONENT = 64
MAX_DIGITS = 400

_STEP_MARKER = re.compile(r"(?im)\bstep\s*\d+\s*[:.)]|^\s*\d+\s*[.)]\s")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CALCULATOR = re.compile(r"<<([^<>=]+)=([^<>]+)>>")  # GSM8K-style <<a*b=c>> annotations
_ARITH_CHARS = set("0123456789.+-*/^() ")
_LATEX = (
    (re.compile(r"\\(?:times|cdot)"), "*"),
    (re.compile(r"\\div"), "/"),
    (re.compile(r"\\left|\\right|\\[,;! ]|\\quad"), " "),
    (re.compile("[\u00d7\u00b7\u2219]"), "*"),  # multiplication sign, middle dot, bullet operator
    (re.compile("\u00f7"), "/"),  # division sign
    (re.compile("[\u2212\u2013]"), "-"),  # minus sign, en dash
)
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CURRENCY = re.compile(r"[$€£](?=\s*\d)|\\\$")


class NotArithmetic(ValueError):
    """The text is not a bounded arithmetic expression we are willing to evaluate."""


@dataclass
class Claim:
    text: str
    correct: bool
    left_value: str
    right_value: str


@dataclass
class Step:
    index: int
    text: str
    claims: list[Claim] = field(default_factory=list)

    @property
    def checked(self) -> bool:
        return bool(self.claims)

    @property
    def score(self) -> float | None:
        """The fraction of this step's claims that hold; None when the step makes no checkable claim."""
        return sum(c.correct for c in self.claims) / len(self.claims) if self.claims else None


@dataclass
class StepReport:
    steps: list[Step]

    @property
    def checked_steps(self) -> list[Step]:
        return [s for s in self.steps if s.checked]

    @property
    def first_wrong_step(self) -> Step | None:
        return next((s for s in self.steps if s.checked and s.score is not None and s.score < 1.0), None)

    @property
    def score(self) -> float | None:
        """The fraction of checked steps whose claims all hold; None when nothing could be checked."""
        checked = self.checked_steps
        return sum(s.score == 1.0 for s in checked) / len(checked) if checked else None

    def as_info(self) -> list[dict[str, object]]:
        return [
            {
                "index": s.index,
                "score": s.score,
                "claims": [{"text": c.text, "correct": c.correct} for c in s.claims],
            }
            for s in self.steps
        ]


# ---------------------------------------------------------------- the safe evaluator


def _check_size(value: Fraction) -> Fraction:
    if len(str(value.numerator)) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
        raise NotArithmetic("number too large")
    return value


def _evaluate_node(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate_node(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _evaluate_node(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate_node(node.left), _evaluate_node(node.right)
        return _check_size(_apply(node.op, left, right))
    raise NotArithmetic(f"{type(node).__name__} is not arithmetic")


def _apply(op: ast.operator, left: Fraction, right: Fraction) -> Fraction:
    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Sub):
        return left - right
    if isinstance(op, ast.Mult):
        return left * right
    if isinstance(op, ast.Div):
        if right == 0:
            raise NotArithmetic("division by zero")
        return left / right
    if isinstance(op, ast.Pow):
        if right.denominator != 1 or abs(right) > MAX_EXPONENT or (left == 0 and right < 0):
            raise NotArithmetic("exponent out of range")
        return left ** int(right)
    raise NotArithmetic(f"operator {type(op).__name__} is not allowed")


def normalize_arithmetic(text: str) -> str:
    """Rewrite LaTeX and typographic arithmetic into the plain form the evaluator reads."""
    for pattern, replacement in _LATEX:
        text = pattern.sub(replacement, text)
    for _ in range(4):  # nested \frac, innermost first
        text = _FRAC.sub(r"((\1)/(\2))", text)
    text = _CURRENCY.sub("", text)
    text = _THOUSANDS.sub("", text)
    return text.replace("{", "(").replace("}", ")").replace("$", " ")


def evaluate(expression: str) -> Fraction:
    """Evaluate a plain arithmetic expression exactly. Raises NotArithmetic for anything else."""
    expression = expression.strip()
    if not expression or len(expression) > MAX_CLAIM_CHARS or not set(expression) <= _ARITH_CHARS:
        raise NotArithmetic("not a bounded arithmetic expression")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise NotArithmetic("does not parse") from exc
    return _evaluate_node(tree)


# ---------------------------------------------------------------- finding claims


def _trailing_run(text: str) -> str:
    """The arithmetic at the end of `text`, or '' when it is the tail of a bigger (symbolic) expression."""
    i = len(text)
    while i > 0 and text[i - 1] in _ARITH_CHARS:
        i -= 1
    run = text[i:].strip()
    if not run or not (run[0].isdigit() or run[0] in "(-."):
        return ""  # starts with a binary operator: its left operand is something we cannot read
    if i > 0 and text[i] != " " and (text[i - 1].isalnum() or text[i - 1] in ")]}_^\\"):
        return ""  # glued to a symbol, as in x2 + 3 or a_1 + 2
    return run


def _leading_run(text: str) -> str:
    i = 0
    while i < len(text) and text[i] in _ARITH_CHARS:
        i += 1
    run = text[:i].strip()
    if i < len(text) and (text[i].isalpha() or text[i] in "_\\") and run == text[:i]:
        return ""  # glued to a symbol, as in 5x
    return run.rstrip(".").strip()


def _values_match(left: Fraction, right: Fraction, right_text: str) -> bool:
    """Exact equality, or equality up to the rounding the right-hand side was written with."""
    if left == right:
        return True
    decimals = len(right_text.split(".")[-1]) if "." in right_text else None
    if decimals is None:
        return False
    return abs(left - right) <= Fraction(1, 2 * 10**decimals) * Fraction(1001, 1000)


def _has_operator(expression: str) -> bool:
    return any(op in expression.lstrip("-") for op in "+-*/^")


def find_claims(step_text: str) -> list[Claim]:
    text = normalize_arithmetic(step_text)
    claims = [_make_claim(lhs, rhs) for lhs, rhs in _CALCULATOR.findall(text)]
    text = _CALCULATOR.sub(" ", text)
    parts = text.split("=")
    for left_part, right_part in itertools.pairwise(parts):
        lhs, rhs = _trailing_run(left_part), _leading_run(right_part)
        if lhs and rhs and (_has_operator(lhs) or _has_operator(rhs)):
            claims.append(_make_claim(lhs, rhs))
    unique: dict[tuple[str, str], Claim] = {}
    for claim in claims:  # a calculator annotation usually repeats the claim written around it
        if claim is not None:
            unique.setdefault((claim.left_value, claim.right_value), claim)
    return list(unique.values())[:MAX_CLAIMS]


def _make_claim(lhs: str, rhs: str) -> Claim | None:
    try:
        left, right = evaluate(lhs), evaluate(rhs)
    except NotArithmetic:
        return None
    return Claim(
        f"{lhs.strip()} = {rhs.strip()}", _values_match(left, right, rhs.strip()), str(left), str(right)
    )


def split_steps(solution: str) -> list[str]:
    """Steps are marked ("Step 1:", "1.") when the solution marks them, else lines, else sentences."""
    solution = solution.strip()
    if not solution:
        return []
    if len(_STEP_MARKER.findall(solution)) >= 2:
        pieces = _STEP_MARKER.split(solution)
    elif "\n" in solution:
        pieces = solution.splitlines()
    else:
        pieces = _SENTENCE_END.split(solution)
    return [p.strip() for p in pieces if p.strip()]


def check_steps(solution: str) -> StepReport:
    steps = [
        Step(index=i, text=text, claims=find_claims(text)) for i, text in enumerate(split_steps(solution))
    ]
    return StepReport(steps)
