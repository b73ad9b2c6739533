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
_BRACES = re.compile(r"\\[{}]|[{}]")  # an escaped brace \{ or \} is content, not structure
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


@dataclass(frozen=True)
class Boxes:
    """The boxed answers of a text, found in one pass: their contents in order of opening, and whether
    some \\boxed{ (or \\fbox{) is never closed."""

    contents: tuple[str, ...]
    unclosed: bool
    top_level: tuple[str, ...] = ()  # the contents of boxes not inside another box


def scan_boxes(text: str) -> Boxes:
    """Every \\boxed{...} / \\fbox{...} of `text` with nested braces, in time linear in its length."""
    openers = {m.end() - 1 for m in _BOXED_OPENERS.finditer(text)}  # positions of their "{"
    if not openers:
        return Boxes((), False)
    stack: list[tuple[int, bool]] = []  # (position after "{", is a box)
    found: list[tuple[int, str, bool]] = []  # (start, content, top level)
    open_boxes = 0
    for match in _BRACES.finditer(text):
        token, position = match.group(), match.start()
        if token == "{":
            is_box = position in openers
            stack.append((position + 1, is_box))
            open_boxes += is_box
        elif token == "}" and stack:
            start, is_box = stack.pop()
            if is_box:
                open_boxes -= 1
                found.append((start, text[start:position].strip(), open_boxes == 0))
    found.sort()
    return Boxes(
        tuple(content for _, content, _ in found),
        open_boxes > 0,
        tuple(content for _, content, top in found if top),
    )


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), nested braces included; None if absent or
    if some box is left unclosed."""
    boxes = scan_boxes(text)
    return boxes.contents[-1] if boxes.contents and not boxes.unclosed else None


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


class UnclosedBox(ValueError):
    """The response opens a \\boxed{ that it never closes: a format failure, never a fallback."""


def extract_answer(text: str, strategies: Sequence[str]) -> Extraction | None:
    """The answer found by the first strategy (in the given order) that finds one. Raises `UnclosedBox`
    when a box is left open, so a broken answer is never read from elsewhere (e.g. the last number)."""
    if scan_boxes(text).unclosed:
        raise UnclosedBox("a \\boxed{ is never closed")
    for name in strategies:
        answer = _EXTRACTORS[name](text)
        if answer:
            return Extraction(answer=answer, strategy=name)
    return None
