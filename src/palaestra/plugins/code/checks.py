"""Static checks on a submission: does it parse, does it use forbidden imports or calls.

These feed checklist items only. They are not the security boundary (the sandbox and the grading
supervisor are): a submission that hides a call from this scan still cannot fool the tests.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ForbiddenRules:
    imports: tuple[str, ...] = ()  # Python modules / C++ headers
    calls: tuple[str, ...] = ()  # dotted names (Python) or function names (C++)


DEFAULT_FORBIDDEN: dict[str, ForbiddenRules] = {
    "python": ForbiddenRules(
        imports=(
            "subprocess",
            "socket",
            "ctypes",
            "multiprocessing",
            "pty",
            "signal",
            "shutil",
            "inspect",
            "gc",
        ),
        calls=(
            "eval",
            "exec",
            "compile",
            "__import__",
            "globals",
            "os.system",
            "os.popen",
            "os.fork",
            "os.kill",
            "os.killpg",
            "os._exit",
            "os.execv",
            "os.execvp",
            "os.execve",
            "os.remove",
            "os.unlink",
            "os.getppid",
        ),
    ),
    "cpp": ForbiddenRules(
        imports=("unistd.h", "sys/socket.h", "sys/ptrace.h", "signal.h", "csignal", "spawn.h"),
        calls=(
            "system",
            "fork",
            "popen",
            "execl",
            "execlp",
            "execv",
            "execvp",
            "execve",
            "kill",
            "ptrace",
            "_exit",
        ),
    ),
}


def forbidden_rules(language: str, config: Mapping[str, Any] | None) -> ForbiddenRules:
    """A language's rules: `[plugins.code.forbidden.LANG]` (`imports`, `calls` lists) or the defaults."""
    table = (config or {}).get(language)
    if not table:
        return DEFAULT_FORBIDDEN.get(language, ForbiddenRules())
    return ForbiddenRules(imports=tuple(table.get("imports", ())), calls=tuple(table.get("calls", ())))


def python_syntax_error(code: str) -> str | None:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in patterns)


def python_violations(code: str, rules: ForbiddenRules) -> list[str]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if _matches(a.name, rules.imports)]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if _matches(node.module, rules.imports):
                found.append(f"from {node.module} import ...")
            found += [
                f"from {node.module} import {a.name}"
                for a in node.names
                if f"{node.module}.{a.name}" in rules.calls
            ]
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name and name in rules.calls:
                found.append(f"call {name}()")
    return sorted(set(found))


_CPP_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_CPP_STRINGS = re.compile(r'"(?:\\.|[^"\\\n])*"')
_CPP_INCLUDE = re.compile(r'#\s*include\s*[<"]([^>"]+)[>"]')


def cpp_violations(code: str, rules: ForbiddenRules) -> list[str]:
    found = [f"#include <{h}>" for h in _CPP_INCLUDE.findall(code) if h.strip() in rules.imports]
    body = _CPP_STRINGS.sub('""', _CPP_COMMENTS.sub(" ", code))
    for name in rules.calls:
        if re.search(rf"(?<![\w.>]){re.escape(name)}\s*\(", body):
            found.append(f"call {name}()")
    return sorted(set(found))


def violations(code: str, language: str, rules: ForbiddenRules) -> list[str]:
    if language == "python":
        return python_violations(code, rules)
    if language == "cpp":
        return cpp_violations(code, rules)
    return []
