"""Answer extraction: find the final answer in a model's response.

Each strategy looks for one shape of answer. A dataset names the strategies it accepts, in order of
preference; the first one that finds something wins. The first strategy in the list is the *required*
format, which the format reward checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

STRATEGIES = ("boxed", "answer_is", "hashes", "last_number", "choice")

_BOXED_OPENERS = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*(?:is)?\s*:?|^\s*answer\s*:)\s*(.+)",
    re.IGNORECASE | re.MULTILINE,
)
_HASHES = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?|-?\.\d+%?")
_CHOICE = re.compile(
    r"(?:answer\s*(?:is)?\s*:?\s*|option\s+|choice\s+|^\s*)\(?([A-J])\)?(?![A-Za-z])",
    re.IGNORECASE | re.MULTILINE,
)
_TRAILING_PUNCT = ".;,: \t"


@dataclass(frozen=True)
class Extraction:
    """What a strategy found: the answer text and which strategy found it."""

    answer: str
    strategy: str


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), nested braces included; None if absent or
    unbalanced."""
    starts = [m.end() for m in _BOXED_OPENERS.finditer(text)]
    for start in reversed(starts):
        content = _balanced_content(text, start)
        if content is not None:
            return content.strip()
    return None


def _balanced_content(text: str, start: int) -> str | None:
    """The text from `start` up to the brace that closes the one just before `start`."""
    depth = 1
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            i += 2  # an escaped brace \{ or \} is content, not structure
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


def _answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group(1).strip()
    boxed = last_boxed(answer)
    if boxed is not None:
        return boxed
    answer = answer.strip("$ ").rstrip(_TRAILING_PUNCT).strip("$ ")
    return answer or None


def _hashes(text: str) -> str | None:
    matches = _HASHES.findall(text)
    return matches[-1].rstrip(_TRAILING_PUNCT) if matches else None


def _last_number(text: str) -> str | None:
    """The last number on the last line that has one (GSM8K-style responses end with the number)."""
    for line in reversed(text.strip().splitlines()):
        numbers = _NUMBER.findall(line)
        if numbers:
            return numbers[-1].replace(" ", "")
    return None


def _choice(text: str) -> str | None:
    boxed = last_boxed(text)
    if boxed is not None and re.fullmatch(r"\(?[A-Ja-j]\)?", boxed.strip()):
        return boxed.strip("() ").upper()
    matches = _CHOICE.findall(text)
    return matches[-1].upper() if matches else None


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": last_boxed,
    "answer_is": _answer_is,
    "hashes": _hashes,
    "last_number": _last_number,
    "choice": _choice,
}


def check_strategies(strategies: Sequence[str]) -> tuple[str, ...]:
    unknown = [s for s in strategies if s not in _EXTRACTORS]
    if unknown or not strategies:
        raise ValueError(f"unknown answer extraction strategies {unknown}; known: {', '.join(STRATEGIES)}")
    return tuple(strategies)


def extract_answer(text: str, strategies: Sequence[str]) -> Extraction | None:
    """The answer found by the first strategy (in the given order) that finds one."""
    for name in strategies:
        answer = _EXTRACTORS[name](text)
        if answer:
            return Extraction(answer=answer, strategy=name)
    return None
