"""Code episodes: single-turn, multi-turn repair and tool mode, over a ChatSpace.

One episode works on one task in one language. The agent's sandbox is leased lazily on the first code
that needs running and released in `close()`. Hidden tests never enter a sandbox in which the agent's
code ran before: single-turn episodes grade in their only sandbox (no agent code ran there yet); repair
and tool episodes grade the final program in a fresh sandbox leased for that purpose.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from palaestra.env import AsyncEnv, EnvContext, InfraError, InvalidAction
from palaestra.plugins.code import feedback
from palaestra.plugins.code.checks import ForbiddenRules, python_syntax_error, violations
from palaestra.plugins.code.extract import Extraction, ExtractMode, extract_code
from palaestra.plugins.code.grader import Grader, GradeReport, run_checked
from palaestra.plugins.code.languages import Language, fill
from palaestra.plugins.code.rewards import (
    FinalFacts,
    RewardConfig,
    format_component,
    gated_process_component,
    judge_checklist,
    outcome_components,
    process_component,
)
from palaestra.plugins.code.tasks import CodeTask
from palaestra.sandbox.api import Sandbox, SandboxError
from palaestra.types import (
    DEFAULT_AGENT,
    Action,
    AgentResult,
    Message,
    Observation,
    RewardComponent,
    StepResult,
    load_json_arguments,
)

RUN_CODE_TOOL = "run_code"


@dataclass(frozen=True)
class EpisodeSettings:
    """How an episode is played; from `[plugins.code]` and the client's open options."""

    repair: bool = False
    tools: bool = False
    max_submissions: int = 3  # repair mode
    max_tool_calls: int = 8  # tool mode, per episode
    extract: ExtractMode = "last"
    stop_on_public_pass: bool = True  # repair: end as soon as every public test passes
    feedback_chars: int = 3000
    tool_output_chars: int = 2000
    tool_seconds: float = 5.0

    @property
    def max_steps(self) -> int:
        submissions = self.max_submissions if self.repair else 1
        return submissions + (self.max_tool_calls if self.tools else 0)


def tool_schema(language: Language) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": RUN_CODE_TOOL,
            "description": (
                f"Run a {language.name} program in a sandbox (no network, a few seconds of CPU) and see its "
                "exit code, stdout and stderr. Use it to experiment; it does not submit anything."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": f"the complete {language.name} program"},
                    "stdin": {"type": "string", "description": "text given to the program on standard input"},
                },
                "required": ["code"],
            },
        },
    }


class CodeEnv(AsyncEnv):
    def __init__(
        self,
        ctx: EnvContext,
        tasks: list[CodeTask],
        language: Language,
        grader: Grader,
        settings: EpisodeSettings,
        rewards: RewardConfig,
        forbidden: ForbiddenRules,
    ) -> None:
        self.ctx = ctx
        self.tasks = tasks
        self.language = language
        self.grader = grader
        self.settings = settings
        self.rewards = rewards
        self.forbidden = forbidden
        self.sandbox: Sandbox | None = None
        self.task = tasks[0]
        self._new_episode_state()

    def _new_episode_state(self) -> None:
        self.steps = 0
        self.submissions = 0
        self.tool_calls = 0
        self.public_fraction = 0.0
        self.deltas: list[float] = []
        self.last_code: str | None = None
        self.last_extraction: Extraction | None = None
        self.done = False

    # ------------------------------------------------------------------ reset

    def _pick_task(self, seed: int | None) -> CodeTask:
        selector = self.ctx.task
        if isinstance(selector, str) and not selector.isdigit():
            for task in self.tasks:
                if task.id == selector:
                    return task
            raise InvalidAction(
                f"no task {selector!r} for {self.ctx.env_id}; {len(self.tasks)} tasks are available"
            )
        if selector is not None and str(selector) != "":
            index = int(selector)
            if not 0 <= index < len(self.tasks):
                raise InvalidAction(f"task index {index} is out of range 0..{len(self.tasks) - 1}")
            return self.tasks[index]
        return self.tasks[random.Random(seed).randrange(len(self.tasks))]

    async def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        await self._release()
        self.task = self._pick_task(seed)
        self._new_episode_state()
        messages = [
            Message("system", feedback.system_prompt(self.language, self.settings, self.task)),
            Message("user", feedback.problem_statement(self.task, self.language)),
        ]
        tools = [tool_schema(self.language)] if self.settings.tools else []
        info = {
            "task_id": self.task.id,
            "difficulty": self.task.difficulty,
            "style": self.task.style,
            "language": self.language.name,
            "public_tests": len(self.task.public_tests),
            "hidden_tests": len(self.task.hidden_tests),
        }
        return StepResult.single(
            AgentResult(observation=Observation(messages=messages, tools=tools, info=info))
        )

    # ------------------------------------------------------------------ step

    async def step(self, actions: Mapping[str, Action]) -> StepResult:
        if self.done:
            raise InvalidAction("the episode has ended")
        action = actions.get(DEFAULT_AGENT) or next(iter(actions.values()), None)
        if action is None or action.kind not in ("text", "message"):
            raise InvalidAction("a code environment expects a text or chat message action")
        self.steps += 1
        message = action.message
        if message is not None and message.tool_calls:
            result = await self._tool_turn(message)
        else:
            result = await self._submission(action.as_text())
        if not result.done and self.steps >= self.settings.max_steps:
            result = await self._finish([], truncated=True)
        return StepResult.single(result)

    async def _submission(self, text: str) -> AgentResult:
        extraction = extract_code(text, self.language, self.settings.extract)
        self.submissions += 1
        self.last_extraction = extraction
        if extraction.code is not None:
            self.last_code = extraction.code
        components = [format_component(extraction, self.rewards)]
        if not self.settings.repair:
            return await self._finish(components)
        if extraction.code is None:
            components.append(
                process_component(0.0, self.public_fraction, self.public_fraction, self.rewards)
            )
            self.deltas.append(0.0)
            note = f"{extraction.reason}."
            return await self._repair_reply(components, note, all_public_pass=False)
        report = await self.grader.grade(
            await self._agent_sandbox(), self.task, extraction.code, self.task.public_tests
        )
        before, after = self.public_fraction, report.fraction
        self.public_fraction = after
        self.deltas.append(after - before)
        components.append(process_component(after - before, before, after, self.rewards))
        note = feedback.public_feedback(report, self.settings.feedback_chars)
        return await self._repair_reply(components, note, all_public_pass=report.all_passed)

    async def _repair_reply(
        self, components: list[RewardComponent], note: str, all_public_pass: bool
    ) -> AgentResult:
        left = self.settings.max_submissions - self.submissions
        if left <= 0 or (all_public_pass and self.settings.stop_on_public_pass):
            return await self._finish(components, lead=note)
        text = feedback.repair_prompt(note, left, self.language)
        return AgentResult(observation=Observation(messages=[Message("user", text)]), components=components)

    # ------------------------------------------------------------------ the end

    async def _finish(
        self, components: list[RewardComponent], truncated: bool = False, lead: str = ""
    ) -> AgentResult:
        """Grade the latest program on all tests; add outcome, process and checklist rewards."""
        self.done = True
        public, hidden = await self._final_reports()
        components = list(components)
        components += outcome_components(hidden, self.rewards)
        if self.rewards.gated and self.settings.repair:
            components.append(
                gated_process_component(self.deltas, hidden.fraction if hidden else 0.0, self.rewards)
            )
        code = self.last_code
        facts = FinalFacts(
            extraction=self.last_extraction
            if code is None
            else Extraction(code, "the latest submitted program"),
            code=code,
            syntax_error=python_syntax_error(code)
            if code is not None and self.language.name == "python"
            else None,
            public=public,
            hidden=hidden,
            forbidden=violations(code, self.language.name, self.forbidden) if code is not None else [],
        )
        judged = await judge_checklist(facts, self.steps, self.rewards)
        components += judged.components(self.rewards.checklist_weight)
        items = judged.results
        summary = feedback.final_summary(lead, public, hidden)
        info = feedback.final_info(public, hidden, self.deltas)
        return AgentResult(
            observation=Observation(messages=[Message("user", summary)], info=info),
            components=components,
            checklist=items,
            terminated=not truncated,
            truncated=truncated,
            info=info,
        )

    async def _final_reports(self) -> tuple[GradeReport | None, GradeReport | None]:
        code = self.last_code
        if code is None:
            return None, None
        tests = self.task.public_tests + self.task.hidden_tests
        if self.settings.repair or self.settings.tools:
            report = await self._grade_in_fresh_sandbox(code, tests)
        else:
            report = await self.grader.grade(await self._agent_sandbox(), self.task, code, tests)
        split = len(self.task.public_tests)
        return report.subset(0, split), report.subset(split, report.total)

    async def _grade_in_fresh_sandbox(self, code: str, tests: Any) -> GradeReport:
        sandbox = await self._lease(f"{self.ctx.episode_id}-grading")
        try:
            return await self.grader.grade(sandbox, self.task, code, tests)
        finally:
            await sandbox.release()

    # ------------------------------------------------------------------ tools

    async def _tool_turn(self, message: Message) -> AgentResult:
        if not self.settings.tools:
            raise InvalidAction(f"{self.ctx.env_id} offers no tools; reply with your program in a code block")
        replies = []
        for call in message.tool_calls:
            self.tool_calls += 1
            content = await self._run_tool(call.name, call.arguments)
            replies.append(Message("tool", content, name=call.name, tool_call_id=call.id))
        return AgentResult(observation=Observation(messages=replies))

    async def _run_tool(self, name: str, arguments: str) -> str:
        if name != RUN_CODE_TOOL:
            return f"error: unknown tool {name!r}; the only tool is {RUN_CODE_TOOL}"
        if self.tool_calls > self.settings.max_tool_calls:
            return (
                f"error: the budget of {self.settings.max_tool_calls} tool calls is spent; submit a program"
            )
        try:
            args = load_json_arguments(arguments)
            code, stdin = str(args["code"]), str(args.get("stdin", ""))
        except ValueError as exc:
            return f'error: {exc}; arguments must be JSON like {{"code": "...", "stdin": "..."}}'
        except (KeyError, TypeError):
            return 'error: arguments must be JSON like {"code": "...", "stdin": "..."}'
        sandbox = await self._agent_sandbox()
        directory = await self.grader.write_submission(sandbox, code, prefix="run")
        compiled, output = await self.grader.compile(sandbox, directory)
        if not compiled:
            return feedback.clip("compilation failed:\n" + output, self.settings.tool_output_chars)
        seconds = self.settings.tool_seconds
        limits = sandbox.profile.limits.with_overrides(wall_seconds=seconds, cpu_seconds=seconds)
        argv = fill(self.language.run_argv, directory, self.grader.settings.python)
        result = await run_checked(
            sandbox, argv, "running the tool", stdin=stdin, timeout=seconds, limits=limits
        )
        return feedback.tool_output(result, self.settings.tool_output_chars)

    # ------------------------------------------------------------------ sandboxes

    async def _lease(self, episode_id: str) -> Sandbox:
        if self.ctx.sandboxes is None:
            raise InfraError("sandbox", "the server has no sandbox manager")
        try:
            return await self.ctx.sandboxes.lease(self.language.profile, episode_id)
        except SandboxError as exc:
            raise InfraError(
                "sandbox", f"could not lease a {self.language.profile!r} sandbox: {exc}"
            ) from exc

    async def _agent_sandbox(self) -> Sandbox:
        if self.sandbox is None:
            self.sandbox = await self._lease(self.ctx.episode_id)
        return self.sandbox

    async def _release(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            try:
                await sandbox.release()
            except SandboxError as exc:
                self.ctx.logger.warning("releasing the sandbox of %s failed: %s", self.ctx.episode_id, exc)

    async def close(self) -> None:
        await self._release()
