"""The languages the code plugin grades, in one table.

A language is a sandbox profile plus a small runner description: the source file name, an optional
compile command, the run command and the fence tags that mark its code blocks. `{dir}` in a command is
replaced by the submission's directory and `{python}` by the sandbox's Python interpreter. Adding a
language is one entry here (and a sandbox profile whose image has the toolchain and a `python3` for
the grading supervisor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Language:
    name: str
    profile: str  # sandbox profile to lease
    source_file: str
    run_argv: tuple[str, ...]
    compile_argv: tuple[str, ...] = ()  # empty: interpreted
    fence_tags: tuple[str, ...] = ()  # code-fence info strings that mean this language
    function_tests: bool = False  # can run function (entry point) tests; needs a Python module
    compile_seconds: float = 30.0
    compile_memory_mb: int = 1024

    @property
    def compiled(self) -> bool:
        return bool(self.compile_argv)


LANGUAGES: dict[str, Language] = {
    "python": Language(
        name="python",
        profile="python",
        source_file="solution.py",
        run_argv=("{python}", "-I", "{dir}/solution.py"),
        fence_tags=("python", "py", "python3"),
        function_tests=True,
    ),
    "cpp": Language(
        name="cpp",
        profile="cpp",
        source_file="solution.cpp",
        compile_argv=("g++", "-std=c++17", "-O2", "-pipe", "-o", "{dir}/solution", "{dir}/solution.cpp"),
        run_argv=("{dir}/solution",),
        fence_tags=("cpp", "c++", "cc", "cxx"),
    ),
}


def get_language(name: str, overrides: Mapping[str, Any] | None = None) -> Language:
    """The language named `name`, with fields replaced from a `[plugins.code.languages.NAME]` table."""
    if name not in LANGUAGES:
        raise KeyError(f"unknown language {name!r}; known: {', '.join(sorted(LANGUAGES))}")
    language = LANGUAGES[name]
    if overrides:
        changes: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        language = replace(language, **changes)
    return language


def fill(argv: tuple[str, ...], directory: str, python: str = "python3") -> list[str]:
    return [part.replace("{dir}", directory).replace("{python}", python) for part in argv]
