"""The equivalence check itself: math-verify's parse and verify, with per-dataset percent handling.

This module runs inside the verifier worker processes (see `pool.py`), where a runaway sympy
computation can be killed. Calling `check` directly in the server process is only safe for trusted
input: it has no deadline.

math-verify's own timeouts are switched off here on purpose: they use `signal.alarm`, which would
cancel the worker's own soft deadline timer, and on a timeout they return False - a wrong answer -
where we must report a verifier timeout.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

PercentMode = Literal["value", "number", "either"]

# A number followed by a percent sign (LaTeX-escaped or not) or the word.
_PERCENT = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(?:\\%|%|\s*percent\b)", re.IGNORECASE)

logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that we disabled its timeouts


@dataclass(frozen=True)
class VerifyOptions:
    """How answers of one dataset are compared.

    percent: "value" reads 50% as 0.5, "number" reads it as 50, "either" accepts both readings.
    """

    percent: PercentMode = "either"
    float_rounding: int = 6
    numeric_precision: int = 15
    strict: bool = True

    def __post_init__(self) -> None:
        if self.percent not in ("value", "number", "either"):
            raise ValueError(f"percent must be 'value', 'number' or 'either', not {self.percent!r}")


class GoldUnparseable(ValueError):
    """The reference answer itself could not be parsed: a dataset problem, never the model's fault."""


def rewrite_percent(text: str, reading: Literal["value", "number"]) -> str:
    """Replace every 'N%' by N/100 ("value") or by N ("number") so math-verify never guesses."""
    if reading == "value":
        return _PERCENT.sub(lambda m: f"\\frac{{{m.group(1)}}}{{100}}", text)
    return _PERCENT.sub(lambda m: m.group(1), text)


def as_math_text(answer: str) -> str:
    """Wrap a bare answer in $...$ so math-verify reads it as LaTeX; leave delimited text alone."""
    stripped = answer.strip()
    if "$" in stripped or "\\boxed" in stripped or stripped.startswith("\\("):
        return stripped
    return f"${stripped}$"


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list[Any]:
    from math_verify import parse

    parsed = parse(as_math_text(gold), parsing_timeout=None)  # type: ignore[arg-type]
    if not parsed:
        raise GoldUnparseable(f"gold answer {gold[:200]!r} could not be parsed")
    return list(parsed)


def _verify_reading(
    gold: str, pred: str, reading: Literal["value", "number"], options: VerifyOptions
) -> bool:
    from math_verify import parse, verify

    gold_parsed = _parse_gold(rewrite_percent(gold, reading))
    pred_parsed = parse(as_math_text(rewrite_percent(pred, reading)), parsing_timeout=None)  # type: ignore[arg-type]
    if not pred_parsed:
        return False
    # Order matters: math-verify is deliberately asymmetric (gold first) to resist reward hacking.
    return bool(
        verify(
            gold_parsed,
            pred_parsed,
            float_rounding=options.float_rounding,
            numeric_precision=options.numeric_precision,
            strict=options.strict,
            timeout_seconds=None,
        )
    )


def check(gold: str, pred: str, options: VerifyOptions) -> bool:
    """Whether `pred` (an extracted answer) is equivalent to `gold`. Raises GoldUnparseable."""
    has_percent = bool(_PERCENT.search(gold) or _PERCENT.search(pred))
    if options.percent == "either" and has_percent:
        return _verify_reading(gold, pred, "value", options) or _verify_reading(gold, pred, "number", options)
    reading: Literal["value", "number"] = "number" if options.percent == "number" else "value"
    return _verify_reading(gold, pred, reading, options)
