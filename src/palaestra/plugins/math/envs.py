"""The math environments: one problem per episode, answered once or after using a Python tool.

Single-turn (default): the first observation is a system message (the answer format) and a user
message (the problem); the agent's one reply is graded and the episode ends. Tool-integrated
(`tools = true`): the agent may call a `python` tool (run in a sandbox leased for the episode) up to
`max_tool_calls` times; each result comes back as a `tool` message; a reply without tool calls is the
final answer.

Rewards: `correct` (OUTCOME, from the verifier pool), `format` (FORMAT: the answer is in the required
format, once), `arithmetic_steps` (PROCESS: the rule-based step checker) and `prm` (PROCESS: a learned
PRM named in the settings). A component that could not be computed carries status TIMEOUT or ERROR
(NOT_RUN when there was nothing to check) and adds nothing to the reward.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from palaestra.env import AsyncEnv, EnvContext, InfraError, InvalidAction
from palaestra.plugins.math.extract import Extraction, extract_answer, scan_boxes
from palaestra.plugins.math.pool import shared_pool
from palaestra.plugins.math.prm import prm_component
from palaestra.plugins.math.settings import MAX_TOOL_CALLS_LIMIT, OPTIONS_SCHEMA, MathSettings, merge
from palaestra.plugins.math.steps import StepReport, check_steps, split_steps
from palaestra.plugins.math.tasks import Task
from palaestra.sandbox.api import ExecResult, ExecStatus, Sandbox, SandboxError
from palaestra.types import (
    Action,
    AgentResult,
    ChatSpace,
    ComponentStatus,
    EnvSpec,
    Message,
    Observation,
    RewardComponent,
    RewardComponentSpec,
    RewardKind,
    StepResult,
    ToolCall,
)

SANDBOX_PROFILE = "python"

REWARD_COMPONENTS = (
    RewardComponentSpec(
        "correct", RewardKind.OUTCOME, "1 when the final answer is equivalent to the reference", 0.0, 1.0
    ),
    RewardComponentSpec(
        "format",
        RewardKind.FORMAT,
        "0 when exactly one final answer is given in the required format, else -1",
        -1.0,
        0.0,
    ),
    RewardComponentSpec(
        "arithmetic_steps", RewardKind.PROCESS, "share of steps whose arithmetic claims hold", 0.0, 1.0
    ),
    RewardComponentSpec(
        "prm", RewardKind.PROCESS, "a learned process reward model's score (when configured)"
    ),
)

PYTHON_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run a Python 3 program in a sandbox and return what it prints (stdout and stderr). "
        "Nothing persists between calls; print every value you need.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The complete program to run."}},
            "required": ["code"],
        },
    },
}

_FORMAT_INSTRUCTIONS = {
    "boxed": "Put your final answer within \\boxed{}.",
    "answer_is": "End your response with 'The answer is <answer>.'",
    "hashes": "End your response with a line '#### <answer>'.",
    "last_number": "End your response with the final number on its own line.",
    "choice": "Answer with the letter of the correct option within \\boxed{}.",
}


@dataclass(frozen=True)
class TaskSource:
    """Where an environment's problems come from: a generator (infinite) or a loaded dataset."""

    generate: Callable[[int, int, str], Task] | None = None
    load: Callable[[], list[Task]] | None = None
    _cache: list[list[Task]] = field(default_factory=list, compare=False)

    def dataset(self) -> list[Task]:
        assert self.load is not None
        if not self._cache:
            self._cache.append(self.load())
        return self._cache[0]

    def pick(self, selector: int | str | None, seed: int | None, settings: MathSettings) -> Task:
        index = _task_index(selector, seed)
        if self.generate is not None:
            if index is None:
                raise InvalidAction(
                    f"task selector {selector!r} is not an index; generated tasks are numbered"
                )
            return self.generate(index, settings.difficulty, settings.split)
        tasks = self.dataset()
        if index is None:  # a task id
            for task in tasks:
                if task.id == selector:
                    return task
            raise InvalidAction(f"no task with id {selector!r} in this dataset")
        return tasks[index % len(tasks)]

    @property
    def num_tasks(self) -> int:
        return 0 if self.generate is not None else len(self.dataset())


def _task_index(selector: int | str | None, seed: int | None) -> int | None:
    if selector is None or selector == "":
        return seed if seed is not None else random.SystemRandom().randrange(2**31)
    if isinstance(selector, int):
        return selector
    return int(selector) if str(selector).lstrip("-").isdigit() else None


@dataclass(frozen=True)
class MathVariant:
    """One registered environment id: its description, task source and default settings."""

    env_id: str
    description: str
    source: TaskSource
    defaults: MathSettings = field(default_factory=MathSettings)
    tags: tuple[str, ...] = ()

    def spec(self) -> EnvSpec:
        steps = MAX_TOOL_CALLS_LIMIT + 2 if self.defaults.tools else 1
        return EnvSpec(
            id=self.env_id,
            description=self.description,
            observation_space=ChatSpace(),
            action_space=ChatSpace(),
            reward_components=REWARD_COMPONENTS,
            tags=("math", "chat", *self.tags),
            max_episode_steps=steps,
            num_tasks=0 if self.source.generate is not None else self.source.num_tasks,
            options_schema=OPTIONS_SCHEMA,
            # The tool variants lease a python sandbox (another variant opened with `tools = true` does
            # too, but is listed without one: most of its episodes never lease).
            sandbox_profiles=(SANDBOX_PROFILE,) if self.defaults.tools else (),
        )


class MathEnv(AsyncEnv):
    def __init__(self, ctx: EnvContext, variant: MathVariant) -> None:
        self.ctx = ctx
        self.variant = variant
        self.base_settings = merge(merge(variant.defaults, ctx.config, operator=True), ctx.options)
        if self.base_settings.prm:
            _prm_function(ctx, self.base_settings)  # refuse to open when the named PRM does not exist
        self.settings = self.base_settings
        self.task: Task | None = None
        self.tool_calls = 0
        self.turns = 0
        self.steps_over_budget = 0
        self.done = True
        self.sandbox: Sandbox | None = None

    # ------------------------------------------------------------ episode API

    async def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        options = dict(options or {})
        try:
            self.settings = merge(self.base_settings, options)
        except ValueError as exc:
            raise InvalidAction(str(exc)) from exc
        self.task = self.variant.source.pick(options.get("task", self.ctx.task), seed, self.settings)
        self.tool_calls, self.turns, self.steps_over_budget, self.done = 0, 0, 0, False
        observation = Observation(
            messages=self._opening_messages(),
            tools=[PYTHON_TOOL] if self.settings.tools else [],
            info={"task_id": self.task.id},
        )
        return StepResult.single(AgentResult(observation=observation))

    async def step(self, actions: Mapping[str, Action]) -> StepResult:
        if self.done or self.task is None:
            raise InvalidAction("the episode has ended; reset it first")
        action = next(iter(actions.values()))
        if action.kind not in ("text", "message"):
            raise InvalidAction("math environments take a text or chat message action")
        self.turns += 1
        calls = action.message.tool_calls if action.message is not None else []
        if calls and self.settings.tools:
            return await self._run_tools(calls)
        return await self._finish(action.as_text())

    async def close(self) -> None:
        if self.sandbox is not None:
            sandbox, self.sandbox = self.sandbox, None
            await sandbox.release()

    # ------------------------------------------------------------ prompts

    def _answer_strategies(self) -> tuple[str, ...]:
        assert self.task is not None
        return ("choice",) if self.task.choices else self.settings.extract

    def _opening_messages(self) -> list[Message]:
        assert self.task is not None
        if self.settings.prompt == "terse":  # for small policies that learn the format in a warm-up
            return [Message("user", str(self.task.meta.get("expression", self._problem_text())))]
        return [Message("system", self._system_prompt()), Message("user", self._problem_text())]

    def _system_prompt(self) -> str:
        lines = ["Solve the problem step by step.", _FORMAT_INSTRUCTIONS[self._answer_strategies()[0]]]
        if self.settings.tools:
            lines.append(
                f"You may run Python code with the `python` tool, at most {self.settings.max_tool_calls} "
                "times; then reply without a tool call to give your final answer."
            )
        return " ".join(lines)

    def _problem_text(self) -> str:
        assert self.task is not None
        if not self.task.choices:
            return self.task.problem
        options = "\n".join(f"{chr(ord('A') + i)}. {choice}" for i, choice in enumerate(self.task.choices))
        return f"{self.task.problem}\n\n{options}"

    # ------------------------------------------------------------ tools

    async def _run_tools(self, calls: list[ToolCall]) -> StepResult:
        over_budget = self.tool_calls >= self.settings.max_tool_calls
        replies = [await self._run_tool(call) for call in calls]
        # One warning step past the budget; a second one, or the spec's step cap, ends the episode.
        self.steps_over_budget += over_budget
        truncated = self.steps_over_budget >= 2 or self.turns >= self.variant.spec().max_episode_steps
        result = AgentResult(observation=Observation(messages=replies), truncated=truncated)
        if truncated:  # the agent never answered: graded as no answer
            self.done = True
            result.components = [
                RewardComponent(
                    "correct",
                    RewardKind.OUTCOME,
                    0.0,
                    self.settings.weight("outcome"),
                    detail="no final answer",
                )
            ]
        return StepResult.single(result)

    async def _run_tool(self, call: ToolCall) -> Message:
        def reply(text: str) -> Message:
            return Message("tool", text, name=call.name, tool_call_id=call.id)

        if call.name != "python":
            return reply(f"error: unknown tool {call.name!r}; the only tool is 'python'")
        if self.tool_calls >= self.settings.max_tool_calls:
            return reply(
                f"error: the limit of {self.settings.max_tool_calls} tool calls is reached; "
                "give your final answer"
            )
        try:
            code = call.load_arguments()["code"]
            if not isinstance(code, str):
                raise TypeError("code must be a string")
        except (ValueError, KeyError, TypeError) as exc:
            return reply(f'error: arguments must be JSON like {{"code": "print(1)"}} ({exc})')
        self.tool_calls += 1
        return reply(self._format_exec(await self._exec_python(code)))

    async def _exec_python(self, code: str) -> ExecResult:
        try:
            if self.sandbox is None:
                if self.ctx.sandboxes is None:
                    raise InfraError(
                        "sandbox", "this server has no sandbox manager; the python tool cannot run"
                    )
                self.sandbox = await self.ctx.sandboxes.lease(SANDBOX_PROFILE, self.ctx.episode_id)
            await self.sandbox.write_file("main.py", code)
            result = await self.sandbox.exec(
                [*self.settings.python_argv, "main.py"], timeout=self.settings.tool_timeout_s
            )
        except SandboxError as exc:
            raise InfraError("sandbox", str(exc)) from exc
        if result.infra_failure:
            raise InfraError("sandbox", result.detail or "the sandbox failed while running the python tool")
        return result

    def _format_exec(self, result: ExecResult) -> str:
        limit = self.settings.tool_output_chars
        output = result.stdout + (f"\n[stderr]\n{result.stderr}" if result.stderr.strip() else "")
        if len(output) > limit:
            output = output[:limit] + f"\n[output cut at {limit} characters]"
        if result.status is ExecStatus.TIMEOUT:
            output += f"\n[timed out after {self.settings.tool_timeout_s:.0f}s]"
        elif result.status is not ExecStatus.OK:
            output += f"\n[stopped: {result.status.value}]"
        elif result.exit_code:
            output += f"\n[exit code {result.exit_code}]"
        return output or "[no output]"

    # ------------------------------------------------------------ grading

    async def _finish(self, response: str) -> StepResult:
        assert self.task is not None
        self.done = True
        components, info = await grade(
            self.ctx, self.settings, self.task, response, self._answer_strategies()
        )
        return StepResult.single(AgentResult(components=components, terminated=True, info=info))


@dataclass(frozen=True)
class Reading:
    """What was read from a final reply: the answer (or why none could be read) and the step report."""

    extraction: Extraction | None
    several: bool  # several different boxed answers
    problem: str = ""  # non-empty: the reply could not be read (a format failure), and why
    steps: StepReport | None = None


def read_response(response: str, strategies: tuple[str, ...], max_chars: int, step_checker: bool) -> Reading:
    """Extract the answer and check the steps: linear in the reply's length, which is capped."""
    if len(response) > max_chars:
        return Reading(None, False, f"the reply has {len(response)} characters; at most {max_chars} are read")
    boxes = scan_boxes(response)
    if boxes.unclosed:
        return Reading(None, False, "a \\boxed{ is never closed")
    extraction = extract_answer(response, strategies)
    several = len({content.replace(" ", "") for content in boxes.top_level}) > 1
    return Reading(extraction, several, steps=check_steps(response) if step_checker else None)


def _format_component(reading: Reading, required: str, weight: float) -> RewardComponent:
    """FORMAT: 0 for a well-formed reply, -1 (a penalty) otherwise - never credit."""

    def failed(detail: str) -> RewardComponent:
        return RewardComponent("format", RewardKind.FORMAT, -1.0, weight, detail=detail)

    if reading.problem:
        return failed(reading.problem)
    if reading.extraction is None or reading.extraction.strategy != required:
        return failed(f"no answer in the required '{required}' format")
    if reading.several:
        return failed("several different final answers")
    return RewardComponent("format", RewardKind.FORMAT, 0.0, weight, detail="well formed")


async def _outcome_component(settings: MathSettings, task: Task, reading: Reading) -> RewardComponent:
    weight = settings.weight("outcome")
    extraction, several = reading.extraction, reading.several

    def scored(correct: bool, detail: str = "") -> RewardComponent:
        return RewardComponent("correct", RewardKind.OUTCOME, float(correct), weight, detail=detail)

    if reading.problem:
        return scored(False, reading.problem)
    if extraction is None:
        return scored(False, "no final answer found")
    if several and settings.multiple_answers == "reject":
        return scored(False, "several different final answers")
    if len(extraction.answer) > settings.max_answer_chars:
        return scored(False, f"answer longer than {settings.max_answer_chars} characters")
    if task.choices or extraction.strategy == "choice":
        return scored(extraction.answer.strip().upper() == task.answer.strip().upper())
    verdict = await shared_pool().verify(
        task.answer, extraction.answer, settings.verify_deadline_s, settings.verify_options()
    )
    if verdict.status is not ComponentStatus.OK:
        return RewardComponent("correct", RewardKind.OUTCOME, 0.0, weight, verdict.status, verdict.detail)
    return scored(verdict.correct, f"answer {extraction.answer[:80]!r}")


def _steps_component(report: StepReport, weight: float) -> tuple[RewardComponent, list[dict[str, object]]]:
    if report.score is None:
        return RewardComponent(
            "arithmetic_steps",
            RewardKind.PROCESS,
            0.0,
            weight,
            ComponentStatus.NOT_RUN,
            "no arithmetic claims to check",
        ), report.as_info()
    wrong = report.first_wrong_step
    detail = (
        "all checked claims hold"
        if wrong is None
        else f"first wrong step: {wrong.index}: {wrong.text[:120]!r}"
    )
    return RewardComponent(
        "arithmetic_steps", RewardKind.PROCESS, report.score, weight, detail=detail
    ), report.as_info()


async def grade(
    ctx: EnvContext, settings: MathSettings, task: Task, response: str, strategies: tuple[str, ...]
) -> tuple[list[RewardComponent], dict[str, Any]]:
    """All reward components for one final response, and the details that go into `info`.

    Reading the reply runs in a worker thread under the verifier deadline, never on the event loop; it
    is linear in the reply's length, which `max_response_chars` caps."""
    try:
        reading = await asyncio.wait_for(
            asyncio.to_thread(
                read_response, response, strategies, settings.max_response_chars, settings.step_checker
            ),
            settings.verify_deadline_s,
        )
    except TimeoutError:
        return _unread(settings, task, f"reading the reply took over {settings.verify_deadline_s} s")
    extraction = reading.extraction
    info: dict[str, Any] = {"task_id": task.id, "answer": extraction.answer[:200] if extraction else None}
    if reading.problem:
        info["unreadable"] = reading.problem
    pending = [_outcome_component(settings, task, reading)]
    prm_fn = _prm_function(ctx, settings)
    if prm_fn is not None:
        pending.append(_prm(prm_fn, settings, task, response, info))
    components = [*await asyncio.gather(*pending)]
    components.insert(1, _format_component(reading, strategies[0], settings.weight("format")))
    if reading.steps is not None:
        steps_component, info["steps"] = _steps_component(reading.steps, settings.weight("process"))
        components.append(steps_component)
    info["first_wrong_step"] = next(
        (s["index"] for s in info.get("steps", []) if s["score"] is not None and s["score"] < 1), None
    )
    return components, info


def _unread(settings: MathSettings, task: Task, why: str) -> tuple[list[RewardComponent], dict[str, Any]]:
    """The reply could not be read in time (only host load can cause it: reading is linear and capped):
    nothing was computed, which is not a score of 0."""
    components = [
        RewardComponent(name, kind, 0.0, settings.weight(weight), ComponentStatus.TIMEOUT, why)
        for name, kind, weight in (
            ("correct", RewardKind.OUTCOME, "outcome"),
            ("format", RewardKind.FORMAT, "format"),
        )
    ]
    return components, {"task_id": task.id, "answer": None, "unreadable": why}


def _prm_function(ctx: EnvContext, settings: MathSettings) -> Callable[..., Any] | None:
    if not settings.prm:
        return None
    if ctx.rewards is None or settings.prm not in ctx.rewards:
        known = ", ".join(ctx.rewards.names()) if ctx.rewards is not None else "none"
        raise InfraError("math", f"PRM reward function {settings.prm!r} is not registered (known: {known})")
    return ctx.rewards.get(settings.prm).fn


async def _prm(
    fn: Callable[..., Any], settings: MathSettings, task: Task, response: str, info: dict[str, Any]
) -> RewardComponent:
    component, scores = await prm_component(
        fn,
        settings.prm,
        task.problem,
        split_steps(response),
        settings.prm_aggregate,  # type: ignore[arg-type]
        settings.prm_timeout_s,
        settings.weight("prm"),
    )
    info["prm_scores"] = scores
    return component
