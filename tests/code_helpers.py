"""Shared helpers for the code plugin's tests: a small task set and a way to run episodes directly."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from palaestra.env import EnvContext
from palaestra.plugins.code import register
from palaestra.plugins.code.env import CodeEnv
from palaestra.registry import EnvRegistry
from palaestra.sandbox.manager import SandboxManager
from palaestra.types import Action, AgentResult, ComponentStatus, Message, StepResult

# Small tasks with short limits keep the slow-submission cases quick.
ADD_TASK = {
    "id": "add",
    "title": "Add",
    "style": "function",
    "entry_point": "add",
    "prompt": "Write add(a, b) returning a + b; raise ValueError if either is not an int.",
    "public_tests": [
        {"name": "small", "code": "assert add(1, 2) == 3"},
        {"name": "negative", "code": "assert add(-1, -1) == -2"},
    ],
    "hidden_tests": [
        {"name": "zero", "code": "assert candidate(0, 0) == 0"},
        {"name": "large", "code": "def test_large():\n    assert add(10**20, 1) == 10**20 + 1\n"},
        {"name": "rejects", "code": "with raises(ValueError):\n    add('1', 2)"},
        {"name": "odd", "code": "assert add(7, 8) == 15"},
    ],
    "reference": {
        "python": "def add(a, b):\n    if type(a) is not int or type(b) is not int:\n"
        "        raise ValueError('ints only')\n    return a + b\n"
    },
    "time_limit": 0.5,
}
SUM_TASK = {
    "id": "pair-sum",
    "title": "Pair sum",
    "style": "stdio",
    "languages": ["python", "cpp"],
    "prompt": "Read two integers and print their sum.",
    "public_tests": [{"name": "sample", "input": "1 2\n", "output": "3\n"}],
    "hidden_tests": [
        {"name": "h_zero", "input": "0 0\n", "output": "0\n"},
        {"name": "h_negative", "input": "-5 3\n", "output": "-2\n"},
        {"name": "h_big", "input": "1000000000 1000000000\n", "output": "2000000000\n"},
    ],
    "reference": {
        "python": "a, b = map(int, input().split())\nprint(a + b)\n",
        "cpp": '#include <iostream>\nint main(){long long a,b;std::cin>>a>>b;std::cout<<a+b<<"\\n";}\n',
    },
    "time_limit": 0.5,
}

ADD_OK = "```python\n" + ADD_TASK["reference"]["python"] + "```"  # type: ignore[index]
SUM_OK_PY = "```python\n" + SUM_TASK["reference"]["python"] + "```"  # type: ignore[index]
SUM_OK_CPP = "```cpp\n" + SUM_TASK["reference"]["cpp"] + "```"  # type: ignore[index]


def write_task_file(directory: Path) -> Path:
    path = directory / "tasks.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in (ADD_TASK, SUM_TASK)))
    return path


def plugin_config(task_file: Path, **extra: Any) -> dict[str, Any]:
    return {"include_builtin": False, "task_files": [{"path": str(task_file)}], **extra}


def make_env(
    env_id: str,
    manager: Any,
    config: Mapping[str, Any],
    task: str | int | None = None,
    options: Mapping[str, Any] | None = None,
) -> CodeEnv:
    registry = EnvRegistry()
    register(registry, config)
    ctx = EnvContext(
        env_id=env_id,
        episode_id=f"test-{env_id}-{task}",
        config=config,
        options=dict(options or {}),
        task=task,
        sandboxes=manager,
    )
    env = registry.get(env_id).factory(ctx)
    assert isinstance(env, CodeEnv)
    return env


async def play(env: CodeEnv, *replies: str | Message) -> list[AgentResult]:
    """Reset, then send each reply; returns the reset result followed by each step's result."""
    results = [(await env.reset(seed=0)).agents["agent"]]
    for reply in replies:
        action = Action(message=reply) if isinstance(reply, Message) else Action(text=reply)
        step: StepResult = await env.step({"agent": action})
        results.append(step.agents["agent"])
        if step.done:
            break
    await env.close()
    return results


def components(result: AgentResult) -> dict[str, float]:
    return {c.name: c.value for c in result.components if c.status is ComponentStatus.OK}


def checklist(result: AgentResult) -> dict[str, bool]:
    return {item.item_id: item.passed for item in result.checklist}


async def local_manager() -> SandboxManager:
    manager = SandboxManager.for_tests(backend="local")
    await manager.start()
    return manager
