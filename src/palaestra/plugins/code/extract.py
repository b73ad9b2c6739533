"""Finding the submitted program in a model's reply."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from palaestra.plugins.code.languages import Language

ExtractMode = Literal["last", "first", "whole"]

# An opening fence (``` or ~~~, three or more) with an optional info string, up to the same fence or the end.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n"
    r"(?P<body>.*?)(?:^[ \t]*(?P=fence)[ \t]*$|\Z)",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class CodeBlock:
    info: str
    code: str


@dataclass(frozen=True)
class Extraction:
    code: str | None
    reason: str  # why this code, or why none

    @property
    def found(self) -> bool:
        return self.code is not None


def code_blocks(text: str) -> list[CodeBlock]:
    return [
        CodeBlock(info=m.group("info").strip().lower(), code=m.group("body").rstrip() + "\n")
        for m in _FENCE.finditer(text)
    ]


def extract_code(
    text: str, language: Language, mode: ExtractMode = "last", max_chars: int = 100_000
) -> Extraction:
    """The program in `text`: a fenced block tagged for `language` (else an untagged one), or the whole text.

    Blocks tagged for another language (```text sample output, ```bash commands) are never taken.
    """
    if mode == "whole":
        code = text.strip()
        if not code:
            return Extraction(None, "the reply is empty")
        return _limit(code + "\n", "the whole reply", max_chars)
    blocks = code_blocks(text)
    tagged = [b for b in blocks if b.info.split()[:1] and b.info.split()[0] in language.fence_tags]
    untagged = [b for b in blocks if not b.info]
    chosen = tagged or untagged
    chosen = [b for b in chosen if b.code.strip()]
    if not chosen:
        tags = ", ".join(f"```{t}" for t in language.fence_tags[:2])
        if blocks:
            return Extraction(
                None, f"no {language.name} code block found (only blocks tagged otherwise); use {tags}"
            )
        return Extraction(
            None, f"no fenced code block found; put your {language.name} program in a {tags} block"
        )
    block = chosen[-1] if mode == "last" else chosen[0]
    which = "last" if mode == "last" else "first"
    kind = f"```{block.info}" if block.info else "untagged"
    return _limit(block.code, f"the {which} {kind} code block of {len(blocks)}", max_chars)


def _limit(code: str, reason: str, max_chars: int) -> Extraction:
    if len(code) > max_chars:
        return Extraction(None, f"the code is {len(code)} characters long; the limit is {max_chars}")
    return Extraction(code, reason)
