"""Any MCP server over stdio as a tool environment: its tools become the episode's tools.

Each episode gets its own server process, started at the first tool call (so episodes that never call a
tool cost nothing) and stopped when the episode closes. The tool list is read once per process and
cached. The MCP client lives in a thread with its own event loop: the `mcp` library's context managers
must be entered and left in one task, while the server calls an environment's reset, step and close from
whatever tasks (or loops) it likes.

Tasks and their checklists come from the config (see `McpDomain.from_config`); the bundled demo server
(`mcp_demo_server.py`) comes with tasks of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from palaestra.env import InfraError
from palaestra.plugins.tools.tasks import Domain, PlannedCall, Task, TurnPlan
from palaestra.plugins.tools.toolbox import TOOL_ERROR_KIND, CallOutcome, Tool, error_outcome
from palaestra.rewards.checklist import (
    ChatEndpoint,
    ChecklistItem,
    Judge,
    JudgeContext,
    LLMJudge,
    ReplyContains,
    ToolCalled,
    mentions,
    normalized,
)
from palaestra.types import ComponentStatus, RewardComponent, RewardKind

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServerCommand:
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None


class McpConnection:
    """One MCP client session to one server process, served by a private thread and event loop."""

    def __init__(self, server: ServerCommand, timeout_s: float = 30.0) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._thread_main, name="mcp-client", daemon=True)

    async def start(self) -> None:
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._ready), START_TIMEOUT_S)
        except Exception as exc:
            await self.close()
            raise InfraError("mcp", f"could not start MCP server {self.server.command}: {exc!r}") from exc

    async def list_tools(self) -> list[Tool]:
        result = await self._submit(lambda session: session.list_tools())
        return [
            Tool(
                t.name,
                t.description or "",
                _field(t, "input_schema", "inputSchema") or {"type": "object"},
            )
            for t in result.tools
        ]

    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """(text of the result, whether the server reported an error)."""
        try:
            result = await self._submit(lambda session: session.call_tool(name, arguments))
        except (TimeoutError, InfraError):
            raise
        except Exception as exc:  # tool failures come back as results; an exception is the connection failing
            raise InfraError("mcp", f"calling {name} failed: {exc!r}") from exc
        texts = [getattr(block, "text", "") for block in result.content or []]
        return "\n".join(t for t in texts if t), bool(_field(result, "is_error", "isError"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and self._queue is not None:
            # The private loop may already have ended (e.g. the server failed to start): nothing to signal.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
        await asyncio.to_thread(self._thread.join, 10.0)

    async def _submit(self, job: Callable[[Any], Awaitable[Any]]) -> Any:
        if self._closed or self._loop is None or self._queue is None:
            raise InfraError("mcp", "the MCP connection is closed")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._pending.add(future)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (job, future))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        finally:
            self._pending.discard(future)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # the server died or never started: fail whoever waits
            failure = InfraError("mcp", f"MCP server {self.server.command} failed: {exc!r}")
            if not self._ready.done():
                self._ready.set_exception(failure)
            for future in list(self._pending):
                if not future.done():
                    future.set_exception(failure)
        finally:
            self._closed = True

    async def _serve(self) -> None:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        params = StdioServerParameters(
            command=self.server.command,
            args=list(self.server.args),
            env=dict(self.server.env) if self.server.env is not None else None,
            cwd=self.server.cwd,
        )
        with open(os.devnull, "w") as errlog:  # the server's own logging is not ours to show
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                self._ready.set_result(None)
                while (item := await self._queue.get()) is not None:
                    job, future = item
                    try:
                        future.set_result(await job(session))
                    except Exception as exc:  # the caller decides; a dead session fails the next call too
                        future.set_exception(exc)


def _field(obj: Any, *names: str) -> Any:
    # mcp 1.x uses camelCase attributes, 2.x snake_case
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    return None


@dataclass
class McpState:
    connection: McpConnection | None = None
    calls: list[str] = field(default_factory=list)


class McpDomain(Domain):
    """Tools from an MCP server; tasks and checklists from the config."""

    name = "mcp"
    outcome_components = ("answer_correct",)

    def __init__(
        self,
        server: ServerCommand,
        tasks: Sequence[Task],
        *,
        description: str = "",
        system_prompt: str = "",
        timeout_s: float = 30.0,
        max_episode_steps: int = 20,
    ) -> None:
        self.server = server
        self._tasks = list(tasks)
        self.description = (
            description or f"The tools of the MCP server {server.command} {' '.join(server.args)}"
        )
        self.policy = system_prompt or "Use the tools to help the user, then reply in plain text."
        self.timeout_s = timeout_s
        self.max_episode_steps = max_episode_steps
        self._tools: list[Tool] | None = None

    @classmethod
    def from_config(cls, table: Mapping[str, Any], judge: Mapping[str, Any] | None = None) -> McpDomain:
        """`[plugins.tools.mcp]`: command, args, env, cwd, timeout_s, max_episode_steps, system_prompt, tasks.

        Each task: id, prompt (a string, or a list of user turns), answer (optional), reference (optional:
        [{calls: [{tool, arguments}], reply}]) and checklist items {id, question, turn, weight, required,
        depends_on} with one of: tool (+ arguments), contains (a list of texts), llm = true (needs a
        `judge` endpoint table: base_url, model, api_key_env, timeout_s).
        """
        server = ServerCommand(
            str(table["command"]),
            tuple(str(a) for a in table.get("args", ())),
            {str(k): str(v) for k, v in table["env"].items()} if table.get("env") else None,
            table.get("cwd"),
        )
        judge_table = judge or table.get("judge")
        tasks = [task_from_config(t, judge_table) for t in table.get("tasks", ())]
        if not tasks:
            tasks = [
                task_from_config(
                    {"id": "default", "prompt": table.get("prompt", "What can your tools do?")}, None
                )
            ]
        return cls(
            server,
            tasks,
            description=str(table.get("description", "")),
            system_prompt=str(table.get("system_prompt", "")),
            timeout_s=float(table.get("timeout_s", 30.0)),
            max_episode_steps=int(table.get("max_episode_steps", 20)),
        )

    def tasks(self) -> Sequence[Task]:
        return self._tasks

    def tools(self) -> Sequence[Tool]:
        if self._tools is None:
            raise RuntimeError("the MCP tool list is read by prepare() before the first episode")
        return self._tools

    async def prepare(self) -> None:
        if self._tools is None:
            connection = McpConnection(self.server, self.timeout_s)
            await connection.start()
            try:
                self._tools = await connection.list_tools()
            finally:
                await connection.close()

    def new_state(self, task: Task) -> McpState:
        return McpState()

    async def call_tool(self, state: McpState, name: str, arguments_json: str) -> CallOutcome:
        checked = self.toolbox().check(name, arguments_json)
        if isinstance(checked, CallOutcome):
            return checked
        _, arguments = checked
        if state.connection is None:
            state.connection = McpConnection(self.server, self.timeout_s)
            await state.connection.start()
        try:
            text, is_error = await state.connection.call(name, arguments)
        except TimeoutError:
            return error_outcome(TOOL_ERROR_KIND, f"{name} timed out after {self.timeout_s} s", arguments)
        state.calls.append(name)
        if is_error:
            return error_outcome(TOOL_ERROR_KIND, text or f"{name} failed", arguments)
        return CallOutcome(text, arguments)

    async def close_state(self, state: McpState) -> None:
        if state.connection is not None:
            await state.connection.close()

    def outcome(self, task: Task, state: Any, ctx: JudgeContext) -> list[RewardComponent]:
        answer = task.data.get("answer")
        if answer is None:
            return [
                RewardComponent(
                    "answer_correct",
                    RewardKind.OUTCOME,
                    0.0,
                    1.0,
                    ComponentStatus.NOT_RUN,
                    "the task has no answer to check",
                )
            ]
        final = ctx.replies[-1].text if ctx.replies else ""
        correct = mentions(final, str(answer))
        return [
            RewardComponent(
                "answer_correct",
                RewardKind.OUTCOME,
                1.0 if correct else 0.0,
                detail="" if correct else f"expected {answer}",
            )
        ]


def _judge_from_config(item: Mapping[str, Any], judge: Mapping[str, Any] | None) -> Judge:
    if "tool" in item:
        return ToolCalled(str(item["tool"]), item.get("arguments") or {})
    if "contains" in item:
        values = item["contains"]
        return ReplyContains([values] if isinstance(values, str) else [str(v) for v in values])
    if item.get("llm"):
        if not judge:
            raise ValueError(
                f"checklist item {item.get('id')!r} wants an LLM judge but no judge endpoint is set"
            )
        return LLMJudge(ChatEndpoint.from_config(judge))
    raise ValueError(f"checklist item {item.get('id')!r} needs one of: tool, contains, llm")


def task_from_config(table: Mapping[str, Any], judge: Mapping[str, Any] | None) -> Task:
    prompt = table.get("prompt", "")
    turns = tuple([prompt] if isinstance(prompt, str) else [str(p) for p in prompt])
    items = [
        ChecklistItem(
            id=str(item["id"]),
            question=str(item.get("question", item["id"])),
            judge=_judge_from_config(item, judge),
            turn=int(item.get("turn", 0)),
            weight=float(item.get("weight", 1.0)),
            required=bool(item.get("required", False)),
            depends_on=tuple(item.get("depends_on", ())),
            pass_condition=str(item.get("pass_condition", "")),
        )
        for item in table.get("checklist", ())
    ]
    reference = tuple(
        TurnPlan(
            tuple(PlannedCall(str(c["tool"]), dict(c.get("arguments", {}))) for c in plan.get("calls", ())),
            str(plan.get("reply", "")),
        )
        for plan in table.get("reference", ())
    )
    data = {"answer": table["answer"]} if "answer" in table else {}
    return Task(
        str(table["id"]),
        turns,
        str(table.get("instructions", " ".join(turns))),
        reference,
        tuple(normalized(items)),
        data,
    )


# ---------------------------------------------------------------- the bundled demo server

DEMO_TASKS: list[dict[str, Any]] = [
    {
        "id": "iron",
        "prompt": "What is the atomic number of iron (symbol Fe)?",
        "answer": "26",
        "checklist": [
            {
                "id": "lookup",
                "question": "Did the agent look up Fe?",
                "tool": "element",
                "arguments": {"symbol": "Fe"},
            },
            {"id": "answer", "question": "Did the agent say 26?", "contains": ["26"], "required": True},
        ],
        "reference": [
            {"calls": [{"tool": "element", "arguments": {"symbol": "Fe"}}], "reply": "Iron is number 26."}
        ],
    },
    {
        "id": "salt",
        "prompt": "What is the sum of the atomic numbers of sodium (Na) and chlorine (Cl)?",
        "answer": "28",
        "checklist": [
            {"id": "na", "question": "Looked up Na?", "tool": "element", "arguments": {"symbol": "Na"}},
            {"id": "cl", "question": "Looked up Cl?", "tool": "element", "arguments": {"symbol": "Cl"}},
            {"id": "answer", "question": "Said 28?", "contains": ["28"], "required": True, "weight": 2},
        ],
        "reference": [
            {
                "calls": [
                    {"tool": "element", "arguments": {"symbol": "Na"}},
                    {"tool": "element", "arguments": {"symbol": "Cl"}},
                ],
                "reply": "11 + 17 = 28.",
            }
        ],
    },
    {
        "id": "boiling",
        "prompt": "Convert 100 degrees Celsius to Fahrenheit.",
        "answer": "212",
        "checklist": [
            {
                "id": "convert",
                "question": "Converted C to F?",
                "tool": "convert_temperature",
                "arguments": {"value": 100, "from_unit": "C", "to_unit": "F"},
            },
            {"id": "answer", "question": "Said 212?", "contains": ["212"], "required": True},
        ],
        "reference": [
            {
                "calls": [
                    {
                        "tool": "convert_temperature",
                        "arguments": {"value": 100, "from_unit": "C", "to_unit": "F"},
                    }
                ],
                "reply": "100 °C is 212 °F.",
            }
        ],
    },
    {
        "id": "body",
        "prompt": "What is 37 degrees Celsius in kelvin?",
        "answer": "310.15",
        "checklist": [
            {
                "id": "convert",
                "question": "Converted C to K?",
                "tool": "convert_temperature",
                "arguments": {"value": 37, "from_unit": "C", "to_unit": "K"},
            },
            {"id": "answer", "question": "Said 310.15?", "contains": ["310.15"], "required": True},
        ],
        "reference": [
            {
                "calls": [
                    {
                        "tool": "convert_temperature",
                        "arguments": {"value": 37, "from_unit": "C", "to_unit": "K"},
                    }
                ],
                "reply": "That is 310.15 K.",
            }
        ],
    },
    {
        "id": "note",
        "prompt": ["Please save a note saying 'order helium'.", "How many notes are saved now?"],
        "answer": "1",
        "checklist": [
            {
                "id": "saved",
                "question": "Saved the note?",
                "tool": "add_note",
                "arguments": {"text": "order helium"},
                "required": True,
            },
            {"id": "listed", "question": "Listed the notes?", "tool": "list_notes", "turn": 1},
            {"id": "count", "question": "Said 1?", "contains": ["1"], "turn": 1},
        ],
        "reference": [
            {"calls": [{"tool": "add_note", "arguments": {"text": "order helium"}}], "reply": "Saved."},
            {"calls": [{"tool": "list_notes", "arguments": {}}], "reply": "There is 1 note."},
        ],
    },
]


def demo_domain() -> McpDomain:
    server = ServerCommand(sys.executable, ("-m", "palaestra.plugins.tools.mcp_demo_server"))
    return McpDomain(
        server,
        [task_from_config(t, None) for t in DEMO_TASKS],
        description="A bundled MCP server (chemical elements, temperature conversion, notes) over stdio.",
    )
