"""Loaders for common public task shapes, converting each record to a `CodeTask`.

* HumanEval-style: {task_id, prompt, test, entry_point, canonical_solution?}. The `check(candidate)`
  function is split into one test per top-level assert when its body is only asserts.
* MBPP-style: {task_id, text, code?, test_list, test_setup_code?, challenge_test_list?}. The entry point is
  the function the first test calls.
* stdin/stdout problem sets: {id|name|problem_id, description|prompt|question, public_tests|examples,
  hidden_tests|private_tests|tests} where tests are lists of {input, output} or {input: [...], output: [...]}.

For external sets the first `public_count` tests are public and the hidden set is EVERY test (so passing
the outcome means passing all of them), unless the record separates public and hidden tests itself.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from palaestra.plugins.code.tasks import (
    CodeTask,
    FunctionTest,
    IOTest,
    TaskFormatError,
    iter_jsonl,
    load_tasks,
    task_from_record,
)


def _split_check(test_code: str) -> list[FunctionTest]:
    """One test per assert of `check(candidate)` when it holds only asserts, else the whole check."""
    whole = [FunctionTest("check", test_code)]
    try:
        tree = ast.parse(test_code)
    except SyntaxError:
        return whole
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        return whole
    body = [s for s in check.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if not body or not all(isinstance(s, ast.Assert) for s in body):
        return whole
    preamble = "\n".join(
        ast.get_source_segment(test_code, n) or "" for n in tree.body if not isinstance(n, ast.FunctionDef)
    )
    tests = []
    for index, statement in enumerate(body):
        source = ast.get_source_segment(test_code, statement) or ""
        tests.append(FunctionTest(f"check_{index}", f"{preamble}\n{source}".strip()))
    return tests


def humaneval_record(record: Mapping[str, Any], public_count: int = 1) -> CodeTask:
    entry = str(record["entry_point"])
    tests = _split_check(str(record["test"]))
    task_id = str(record.get("task_id", entry)).replace("/", "-")
    return CodeTask(
        id=task_id,
        prompt=f"Complete the function `{entry}`:\n\n```python\n{str(record['prompt']).rstrip()}\n```",
        style="function",
        public_tests=tuple(tests[:public_count]),
        hidden_tests=tuple(tests),
        entry_point=entry,
        starter={"python": str(record["prompt"])},
        reference={"python": str(record["prompt"]) + str(record["canonical_solution"])}
        if record.get("canonical_solution")
        else {},
        source="humaneval",
    )


_CALLED = re.compile(
    r"assert\s+(?:not\s+)?\(?\s*(?:set\(|sorted\(|math\.isclose\(|abs\()?\s*([A-Za-z_]\w*)\s*\("
)


def _mbpp_entry_point(tests: Sequence[str], code: str) -> str:
    defined = set(re.findall(r"^def\s+([A-Za-z_]\w*)", code, re.MULTILINE))
    for test in tests:
        for name in re.findall(r"([A-Za-z_]\w*)\s*\(", test):
            if name in defined or (
                not defined and name not in {"set", "sorted", "abs", "isclose", "math", "len"}
            ):
                return name
    match = _CALLED.search(tests[0]) if tests else None
    if match is None:
        raise TaskFormatError("cannot tell which function the MBPP tests call")
    return match.group(1)


def mbpp_record(record: Mapping[str, Any], public_count: int = 1) -> CodeTask:
    asserts = [str(t) for t in record["test_list"]] + [
        str(t) for t in record.get("challenge_test_list") or []
    ]
    code = str(record.get("code", ""))
    entry = _mbpp_entry_point(asserts, code)
    tests = [FunctionTest(f"test_{i}", t) for i, t in enumerate(asserts)]
    shown = "\n".join(asserts[:public_count])
    return CodeTask(
        id=f"mbpp-{record.get('task_id', entry)}",
        prompt=f"{record['text']}\nYour code should pass tests like:\n{shown}",
        style="function",
        public_tests=tuple(tests[:public_count]),
        hidden_tests=tuple(tests),
        entry_point=entry,
        setup_code=str(record.get("test_setup_code", "")),
        reference={"python": code} if code else {},
        source="mbpp",
    )


def _io_tests(raw: Any, prefix: str) -> list[IOTest]:
    if isinstance(raw, Mapping):  # {"input": [...], "output": [...]}
        pairs = list(zip(raw.get("input", []), raw.get("output", []), strict=True))
        return [IOTest(f"{prefix}_{i}", str(a), str(b)) for i, (a, b) in enumerate(pairs)]
    return [
        IOTest(str(t.get("name", f"{prefix}_{i}")), str(t["input"]), str(t["output"]))
        for i, t in enumerate(raw or [])
    ]


def stdio_record(
    record: Mapping[str, Any], public_count: int = 1, languages: Sequence[str] = ("python", "cpp")
) -> CodeTask:
    task_id = str(record.get("id") or record.get("name") or record.get("problem_id") or "")
    if not task_id:
        raise TaskFormatError("a stdin/stdout problem needs an id, name or problem_id")
    prompt = str(record.get("description") or record.get("prompt") or record.get("question") or "")
    public = _io_tests(record.get("public_tests") or record.get("examples"), "public")
    hidden = _io_tests(
        record.get("hidden_tests") or record.get("private_tests") or record.get("tests"), "hidden"
    )
    if not public and not hidden:
        raise TaskFormatError(f"problem {task_id!r} has no tests")
    if not hidden:
        hidden = list(public)
    if not public:
        public = hidden[:public_count]
    solutions = record.get("solutions") or record.get("reference") or {}
    return CodeTask(
        id=task_id,
        prompt=prompt,
        style="stdio",
        public_tests=tuple(public),
        hidden_tests=tuple(hidden),
        languages=tuple(languages),
        time_limit=float(record.get("time_limit", 2.0)),
        memory_mb=int(record.get("memory_mb", record.get("memory_limit", 256))),
        reference=dict(solutions) if isinstance(solutions, Mapping) else {},
        source="stdio",
    )


Loader = Callable[[Mapping[str, Any]], CodeTask]
FORMATS: dict[str, Loader | None] = {
    "native": None,
    "humaneval": humaneval_record,
    "mbpp": mbpp_record,
    "stdio": stdio_record,
}


def load_file(path: str | Path, fmt: str = "native") -> list[CodeTask]:
    """Tasks from a JSONL file in one of FORMATS."""
    if fmt not in FORMATS:
        raise TaskFormatError(f"unknown task format {fmt!r}; known: {', '.join(FORMATS)}")
    loader = FORMATS[fmt]
    if loader is None:
        return load_tasks(path)
    tasks = []
    for number, record in iter_jsonl(path):
        try:
            tasks.append(loader(record))
        except (KeyError, TypeError, ValueError) as exc:
            raise TaskFormatError(f"{path}:{number}: not a {fmt} record: {exc}") from exc
    return tasks


__all__ = ["FORMATS", "humaneval_record", "load_file", "mbpp_record", "stdio_record", "task_from_record"]
