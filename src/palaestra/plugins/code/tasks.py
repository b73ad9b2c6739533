"""Programming tasks and their JSONL format (documented in docs/code.md).

A task is either *function* style (Python test code calls the submitted module's entry point) or
*stdio* style (the program reads stdin and writes stdout, compared token by token). Each task has
public tests (shown to the agent and used for repair feedback) and hidden tests (which decide the outcome).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Style = Literal["function", "stdio"]
STYLES: tuple[str, ...] = ("function", "stdio")
CHECKERS: tuple[str, ...] = ("tokens", "exact", "float")


class TaskFormatError(ValueError):
    """A task record does not follow the documented format."""


@dataclass(frozen=True)
class FunctionTest:
    """Test code run against the submitted module: asserts, or `test_*`/`check(candidate)` functions."""

    name: str
    code: str


@dataclass(frozen=True)
class IOTest:
    """One stdin/stdout case; limits of 0 fall back to the task's."""

    name: str
    input: str
    output: str
    time_limit: float = 0.0
    memory_mb: int = 0


Test = FunctionTest | IOTest


@dataclass(frozen=True)
class CodeTask:
    id: str
    prompt: str
    style: Style
    public_tests: tuple[Test, ...]
    hidden_tests: tuple[Test, ...]
    languages: tuple[str, ...] = ("python",)
    title: str = ""
    difficulty: str = "medium"
    entry_point: str = ""  # function style: the function the tests call as `candidate`
    setup_code: str = ""  # function style: run before each test (imports, helpers)
    starter: Mapping[str, str] = field(default_factory=dict)  # language -> code shown to the agent
    reference: Mapping[str, str] = field(default_factory=dict)  # language -> a correct solution
    time_limit: float = 2.0  # seconds per test
    memory_mb: int = 256  # per test
    checker: str = "tokens"  # stdio: tokens | exact | float
    float_tolerance: float = 1e-6
    source: str = ""

    def supports(self, language: str) -> bool:
        return language in self.languages

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["starter"] = dict(self.starter)
        record["reference"] = dict(self.reference)
        return record


def _require(record: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise TaskFormatError(f"{where}: missing required field {key!r}")
    return record[key]


def _parse_test(raw: Any, style: str, where: str, index: int) -> Test:
    if not isinstance(raw, Mapping):
        raise TaskFormatError(f"{where}: test {index} must be an object")
    name = str(raw.get("name") or f"test_{index}")
    if style == "function":
        return FunctionTest(name=name, code=str(_require(raw, "code", f"{where} test {name}")))
    return IOTest(
        name=name,
        input=str(_require(raw, "input", f"{where} test {name}")),
        output=str(_require(raw, "output", f"{where} test {name}")),
        time_limit=float(raw.get("time_limit", 0.0)),
        memory_mb=int(raw.get("memory_mb", 0)),
    )


def task_from_record(record: Mapping[str, Any], where: str = "task") -> CodeTask:
    """Validate one JSONL record and build its task."""
    task_id = str(_require(record, "id", where))
    where = f"{where} {task_id!r}"
    style = str(record.get("style", "function"))
    if style not in STYLES:
        raise TaskFormatError(f"{where}: style must be one of {STYLES}, not {style!r}")
    tests = {
        kind: tuple(_parse_test(t, style, where, i) for i, t in enumerate(record.get(kind) or []))
        for kind in ("public_tests", "hidden_tests")
    }
    if not tests["hidden_tests"]:
        raise TaskFormatError(f"{where}: needs at least one hidden test")
    languages = tuple(record.get("languages") or ["python"])
    if style == "function" and (languages != ("python",) or not record.get("entry_point")):
        raise TaskFormatError(f"{where}: function-style tasks are Python-only and need an entry_point")
    checker = str(record.get("checker", "tokens"))
    if checker not in CHECKERS:
        raise TaskFormatError(f"{where}: checker must be one of {CHECKERS}, not {checker!r}")
    return CodeTask(
        id=task_id,
        prompt=str(_require(record, "prompt", where)),
        style=style,  # type: ignore[arg-type]
        public_tests=tests["public_tests"],
        hidden_tests=tests["hidden_tests"],
        languages=languages,
        title=str(record.get("title", "")),
        difficulty=str(record.get("difficulty", "medium")),
        entry_point=str(record.get("entry_point", "")),
        setup_code=str(record.get("setup_code", "")),
        starter=dict(record.get("starter") or {}),
        reference=dict(record.get("reference") or {}),
        time_limit=float(record.get("time_limit", 2.0)),
        memory_mb=int(record.get("memory_mb", 256)),
        checker=checker,
        float_tolerance=float(record.get("float_tolerance", 1e-6)),
        source=str(record.get("source", "")),
    )


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TaskFormatError(f"{path}:{number}: not JSON: {exc}") from None


def load_tasks(path: str | Path) -> list[CodeTask]:
    """Tasks from a JSONL file in the native format."""
    return [task_from_record(record, f"{path}:{number}") for number, record in iter_jsonl(path)]


def write_tasks(path: str | Path, tasks: Iterable[CodeTask]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps(task.to_record(), ensure_ascii=False) + "\n")


BUILTIN_PATH = Path(__file__).with_name("data") / "builtin.jsonl"
_builtin_cache: list[CodeTask] | None = None


def builtin_tasks() -> list[CodeTask]:
    """The plugin's own problem set (loaded once per process)."""
    global _builtin_cache
    if _builtin_cache is None:
        _builtin_cache = load_tasks(BUILTIN_PATH)
    return _builtin_cache
