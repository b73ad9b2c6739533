"""A scripted agent for `palaestra run code/...`: it knows the built-in tasks' reference solutions.

`make_scripted_policy(env_id, seed) -> Policy | None` (the hook `palaestra.agents.policies` looks for).
The policy is called with each `EpisodeStep` and returns `{"agent": Action}`:

* repair envs (`code/<lang>-repair`): first a deliberately wrong program, then, after the public-test
  feedback, the reference solution: the episode shows process credit and a passing outcome;
* tool envs (`code/<lang>-tools`): one `run_code` call on the first public test, then the reference;
* single-turn envs: the reference solution at once.

Tasks it does not know (custom task files) get the reply "I do not know." (a format failure).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from palaestra.plugins.code.env import RUN_CODE_TOOL
from palaestra.plugins.code.languages import LANGUAGES, Language
from palaestra.plugins.code.tasks import CodeTask, IOTest, builtin_tasks
from palaestra.types import DEFAULT_AGENT, Action, EpisodeStep, Message, ToolCall

Policy = Callable[[EpisodeStep], Mapping[str, Action]]


def wrong_program(task: CodeTask, language: Language) -> str:
    """A program that runs but answers wrongly: the first half of a repair demo."""
    if task.style == "function":
        return f"def {task.entry_point}(*args, **kwargs):\n    return None\n"
    if language.name == "cpp":
        return '#include <cstdio>\nint main() { std::puts("0"); return 0; }\n'
    return "print(0)\n"


def fenced(code: str, language: Language, note: str) -> str:
    return f"{note}\n\n```{language.fence_tags[0]}\n{code.rstrip()}\n```\n"


def _language_of(env_id: str) -> Language | None:
    name = env_id.split("/", 1)[-1].split("-", 1)[0]
    return LANGUAGES.get(name)


def make_scripted_policy(env_id: str, seed: int | None = None) -> Policy | None:
    language = _language_of(env_id)
    if not env_id.startswith("code/") or language is None:
        return None
    tasks = {t.id: t for t in builtin_tasks()}
    state: dict[str, object] = {"turn": 0, "task": None}

    def act(step: EpisodeStep) -> Mapping[str, Action]:
        result = step.agents.get(DEFAULT_AGENT)
        if result is not None and "task_id" in result.observation.info and state["turn"] == 0:
            state["task"] = tasks.get(str(result.observation.info["task_id"]))
        task = state["task"]
        turn = int(state["turn"])  # type: ignore[call-overload]
        state["turn"] = turn + 1
        if not isinstance(task, CodeTask) or language.name not in task.reference:
            return {DEFAULT_AGENT: Action(text="I do not know.")}
        reference = task.reference[language.name]
        if env_id.endswith("-repair") and turn == 0:
            draft = fenced(wrong_program(task, language), language, "A first attempt:")
            return {DEFAULT_AGENT: Action(text=draft)}
        if env_id.endswith("-tools") and turn == 0:
            return {DEFAULT_AGENT: Action(message=_tool_call(task, reference))}
        return {DEFAULT_AGENT: Action(text=fenced(reference, language, "Here is my solution:"))}

    return act


def _tool_call(task: CodeTask, reference: str) -> Message:
    first = task.public_tests[0] if task.public_tests else None
    stdin = first.input if isinstance(first, IOTest) else ""
    code = reference if task.style == "stdio" else f"{reference}\nprint('module loads')\n"
    arguments = json.dumps({"code": code, "stdin": stdin})
    call = ToolCall(name=RUN_CODE_TOOL, arguments=arguments, id="call-1")
    return Message(role="assistant", content="Let me try it first.", tool_calls=[call])
