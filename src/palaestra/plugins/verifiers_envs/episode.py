"""One verifiers environment served as Palaestra episodes (see the package docstring).

The verifiers side expects to drive the conversation: an `Env.run(task, agents)` opens
`agents.<seat>.interaction(task)` and calls `turn(...)`, and a plain taskset runs `agents.agent.run(task)`.
Here the agent in that seat is the Palaestra client: `Seat` stands in for verifiers' `Agent`, and each
model call it would make becomes one Palaestra step. The verifiers code runs as a task on the server's
event loop; `VerifiersEnv.reset`/`step` hand it the policy's reply and wait until it wants the next one
(or ends). The exchange is recorded on a real verifiers `Trace`, so the task's own `@vf.reward` and
`@vf.metric` functions score it exactly as they would in verifiers (`Task.score`).

Failures: an exception from the environment's own code (its `run`, `finalize`, or a reward function)
after the policy's first reply may have been provoked by that reply, and the server cannot tell: it is
the policy's failure, never an infrastructure failure that a trainer would drop (a policy could learn to
crash a rubric to escape its 0). The episode ends with reward 0: every reward function of the task is
reported with status ERROR and the exception as its detail (or one `env.error` component when the
environment records its rewards itself). An exception before the policy's first reply (the environment
failing to start its run) is an infrastructure failure (source `environment`): the policy could not
have caused it. A tool that raises, unknown tools and bad arguments are the policy's calls: the error
goes back to the policy as the tool's result, as verifiers' MCP tool servers answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import itertools
import json
import random
import threading
import typing
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pydantic
import verifiers.v1 as vf
from verifiers.v1.configs.agent import AgentConfig
from verifiers.v1.envs.single_agent import SingleAgentEnv
from verifiers.v1.episode import EnvInfo
from verifiers.v1.episode import Episode as VfEpisode
from verifiers.v1.graph import MessageNode
from verifiers.v1.trace import AgentInfo, Trace, TraceTask
from verifiers.v1.types import content_text
from verifiers.v1.utils import loaders
from verifiers.v1.utils.decorators import discover_decorated
from verifiers.v1.utils.version import verifiers_commit

from palaestra.env import AsyncEnv, EnvContext, EnvFactory, InfraError, InvalidAction
from palaestra.registry import EnvUnavailable
from palaestra.types import (
    DEFAULT_AGENT,
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
    load_json_arguments,
)

DEFAULT_MAX_TURNS = 16  # policy replies per episode unless the `max_turns` option says otherwise
MAX_TURNS = 64
INFINITE_TASKS = 1000  # the tasks of an infinite taskset that seeds choose from
MAX_TOOL_CALLS_PER_STEP = 16
MAX_TOOL_RESULT_CHARS = 8000
TOOL_TIMEOUT_S = 120.0
ENV_FAMILY = "env."
# Taskset config fields that are not open options: `task` plugs functions by import path (code the
# client would choose), `system_prompt` is a file on the server, `id` is the environment itself.
NOT_OPTIONS = ("id", "task", "system_prompt")
RECENT_TASKSETS = 16


@dataclass(frozen=True)
class Served:
    """What `vf/<name>` resolved to."""

    env_id: str
    name: str
    taskset_class: Any
    config_class: Any
    env_class: Any  # None: a plain taskset (verifiers' single-agent case: one `run` of the seat)
    env_config_class: Any
    seat: str
    rewards: tuple[tuple[str, float], ...]  # the task's @vf.reward functions: (name, weight)

    @property
    def declared(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.rewards)


def served_environment(env_id: str) -> tuple[EnvSpec, EnvFactory] | None:
    served = _served(env_id)
    if served is None:
        return None

    def factory(context: EnvContext) -> VerifiersEnv:
        return VerifiersEnv(served, context)

    return spec_of(served), factory


def _served(env_id: str) -> Served | None:
    name = env_id.split("/", 1)[1]
    module = name.replace("-", "_").lower()  # the module verifiers' loader imports for the id
    found = _verifiers_module(module)
    if found is None:
        return None  # no such module: NOT_FOUND
    if not found:
        raise ValueError(f"the module {module!r} is not a verifiers environment (it does not use verifiers)")
    try:
        loaders.import_taskset(name)
    except ModuleNotFoundError as exc:
        missing = getattr(exc.__cause__, "name", None) or exc.name or ""
        raise EnvUnavailable(f"{env_id} needs the module {missing!r}, which is not installed") from None
    except Exception as exc:  # the module exists but does not import here (a missing extra, a bad install)
        raise EnvUnavailable(f"{env_id} cannot be imported: {type(exc).__name__}: {exc}") from None
    try:
        taskset_class = loaders.taskset_class(name)
        config_class = loaders.taskset_config_type(name)
        env_class = loaders.environment_class(name)
        env_config_class = loaders.env_config_type(name)
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"{name!r} is not a verifiers environment: {exc}") from None
    task_class = taskset_class.task_type()
    if task_class.NEEDS_CONTAINER or any(
        getattr(task_class, hook) is not getattr(vf.Task, hook) for hook in ("setup", "finalize")
    ):
        raise EnvUnavailable(
            f"{env_id}: its tasks need a verifiers runtime (a container, their own setup/finalize), "
            "which the vf plugin does not provide"
        )
    seats = _seats(env_config_class)
    if len(seats) != 1:
        raise EnvUnavailable(
            f"{env_id}: its Env has {len(seats)} agent seats ({', '.join(seats)}); the vf plugin serves "
            "environments with one seat"
        )
    return Served(
        env_id=env_id,
        name=name,
        taskset_class=taskset_class,
        config_class=config_class,
        env_class=None if env_class is SingleAgentEnv else env_class,
        env_config_class=env_config_class,
        seat=seats[0],
        rewards=_reward_functions(task_class),
    )


def _verifiers_module(module: str) -> bool | None:
    """Whether the module `vf/<name>` names uses verifiers (None: there is none). A client chooses the
    name, so an installed module whose source (for a package: its top-level files) never mentions
    verifiers is not imported at all (its import could do anything); verifiers' own tasksets are."""
    namespaced = f"verifiers.v1.tasksets.{module}"
    if importlib.util.find_spec(namespaced) is not None:
        return True
    spec = importlib.util.find_spec(module)  # a top-level name (no dots): imports nothing
    if spec is None:
        return None
    sources = [Path(spec.origin)] if spec.origin and spec.origin.endswith(".py") else []
    for folder in spec.submodule_search_locations or ():
        sources += sorted(Path(folder).glob("*.py"))
    for source in sources:
        with contextlib.suppress(OSError):
            if "verifiers" in source.read_text(errors="replace"):
                return True
    return False


def _seats(env_config_class: Any) -> list[str]:
    """The agent seats an Env's config declares (its AgentConfig fields)."""
    seats = []
    for name, field in env_config_class.model_fields.items():
        annotation = field.annotation
        if isinstance(field.default, AgentConfig) or (
            isinstance(annotation, type) and issubclass(annotation, AgentConfig)
        ):
            seats.append(name)
    return seats


def _reward_functions(task_class: Any) -> tuple[tuple[str, float], ...]:
    """The task class's @vf.reward methods that need no runtime (verifiers skips those without one), in
    verifiers' order; an undecorated override drops a decorated base method, as verifiers does."""
    found: dict[str, Any] = {}
    for klass in reversed(task_class.__mro__):
        for name, fn in vars(klass).items():
            if callable(fn) and getattr(fn, "reward", False) is True:
                found[name] = fn
            elif name in found:
                del found[name]
    rewards = []
    for name, fn in found.items():
        runtime = inspect.signature(fn).parameters.get("runtime")
        if runtime is not None and runtime.default is inspect.Parameter.empty:
            continue
        rewards.append((name, float(getattr(fn, "_vf_weight", 1.0)), -getattr(fn, "reward_priority", 0)))
    rewards.sort(key=lambda r: (r[2], r[0]))
    return tuple((name, weight) for name, weight, _ in rewards)


def spec_of(served: Served) -> EnvSpec:
    components = tuple(
        RewardComponentSpec(name, RewardKind.OUTCOME, f"verifiers reward function {name} (weight {weight:g})")
        for name, weight in served.rewards
    )
    recorded = RewardComponentSpec(
        ENV_FAMILY + "*",
        RewardKind.OUTCOME,
        "rewards the environment recorded itself (its Env's run/finalize, keyed scores), with its weights",
    )
    kind = "multi-turn: its Env runs the turns" if served.env_class is not None else "its tasks answered"
    return EnvSpec(
        id=served.env_id,
        description=f"verifiers environment {served.name} ({kind}; rewards: "
        f"{', '.join(name for name, _ in served.rewards) or 'recorded by the environment'})",
        observation_space=ChatSpace(),
        action_space=ChatSpace(),
        reward_components=(*components, recorded),
        tags=("verifiers", "chat", *(("multi-turn",) if served.env_class is not None else ())),
        max_episode_steps=MAX_TURNS,
        options_schema=options_schema(served.config_class),
    )


@cache
def options_schema(config_class: Any) -> dict[str, Any]:
    """The taskset config's client-settable fields (JSON Schema from its pydantic model) and `max_turns`.

    A client may set numbers, booleans and fixed choices. Free strings, objects and lists can name a URL,
    a file or a command (`openenv`'s `base_url`, `nemo_gym`'s `dataset`), so only the operator sets them,
    in `[plugins.verifiers_envs.config.<name>]`: no client chooses where the server reaches out."""
    schema = config_class.model_json_schema()
    properties = {
        k: v
        for k, v in schema.get("properties", {}).items()
        if k not in NOT_OPTIONS and _client_settable(v, schema.get("$defs", {}))
    }
    properties["max_turns"] = {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_TURNS,
        "description": f"most policy replies per episode (default {DEFAULT_MAX_TURNS})",
    }
    result: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [name for name in schema.get("required", ()) if name in properties]
    if required:
        result["required"] = required
    if "$defs" in schema:
        result["$defs"] = schema["$defs"]
    return result


def _client_settable(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> bool:
    if "$ref" in schema:  # pydantic puts enums (and models) in $defs
        return _client_settable(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs)
    if "enum" in schema or "const" in schema:
        return True
    if "anyOf" in schema:
        return all(_client_settable(option, defs) for option in schema["anyOf"])
    return schema.get("type") in ("integer", "number", "boolean", "null")


def taskset_config(served: Served, options: Mapping[str, Any], operator: Mapping[str, Any]) -> Any:
    """The taskset config: the operator's values (`[plugins.verifiers_envs.config.<name>]`), then the open
    options (max_turns aside); ValueError naming what was refused."""
    fields = {k: v for k, v in options.items() if k != "max_turns"}
    try:
        return served.config_class.model_validate({**operator, **fields, "id": served.name})
    except pydantic.ValidationError as exc:
        raise ValueError(f"{served.env_id}: the options {fields} were refused: {exc}") from None


def operator_config(served: Served, plugin_config: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(plugin_config.get("config", {}).get(served.name, {}))


_TASKS: dict[tuple[str, str], list[Any]] = {}
_TASKS_LOCK = threading.Lock()


def load_tasks(served: Served, config: Any) -> list[Any]:
    """The taskset's tasks for `config` (the first INFINITE_TASKS of an infinite one), kept for the
    recent configurations: a group of episodes loads the dataset once."""
    key = (served.name, config.model_dump_json())
    verifiers_commit()  # every Trace records it; found once (it may run git), here off the event loop
    with _TASKS_LOCK:
        tasks = _TASKS.get(key)
        if tasks is None:
            taskset = served.taskset_class(config)
            found = iter(taskset)
            tasks = list(found) if taskset.bounded else list(itertools.islice(found, INFINITE_TASKS))
            _TASKS[key] = tasks
            while len(_TASKS) > RECENT_TASKSETS:
                _TASKS.pop(next(iter(_TASKS)))
        return tasks


def pick_task(tasks: Sequence[Any], selector: int | str | None, seed: int | None) -> Any:
    if isinstance(selector, int) and not isinstance(selector, bool):
        if not 0 <= selector < len(tasks):
            raise InvalidAction(f"task index {selector} is out of range: the taskset has {len(tasks)} tasks")
        return tasks[selector]
    if isinstance(selector, str) and selector:
        for task in tasks:
            if selector in (task.data.id, task.data.name):
                return task
        raise InvalidAction(f"no task has the id or name {selector!r}")
    chosen = seed if seed is not None else random.SystemRandom().randrange(2**31)
    return tasks[chosen % len(tasks)]


# ---------------------------------------------------------------- tools


@dataclass(frozen=True)
class _Tool:
    fn: Any
    arguments: type[pydantic.BaseModel]


class Tools:
    """The tools of one episode: fresh instances of the taskset's and the task's Toolsets, called in
    process (verifiers serves them over MCP; the names and schemas are the same)."""

    def __init__(self) -> None:
        self.toolsets: list[Any] = []
        self.tools: dict[str, _Tool] = {}
        self.declarations: list[vf.Tool] = []

    async def start(self, served: Served, config: Any, task: Any) -> None:
        shared = list(served.taskset_class.toolsets(config))
        scoped = list(type(task).toolsets(task.config))
        for toolset in shared + scoped:
            self.toolsets.append(toolset)
            await toolset.setup()
        for toolset in scoped:
            await toolset.setup_task(task)
        for toolset in self.toolsets:
            prefix = toolset.server_name
            for fn in discover_decorated(toolset, "tool"):
                short = getattr(fn, "tool_name", None) or fn.__name__
                name = f"{prefix}_{short}" if prefix else short
                arguments = _arguments_model(fn)
                self.tools[name] = _Tool(fn, arguments)
                self.declarations.append(
                    vf.Tool(
                        name=name,
                        description=(fn.__doc__ or "").strip(),
                        parameters=arguments.model_json_schema(),
                    )
                )

    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI function declarations, as Palaestra observations carry them."""
        return [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in self.declarations
        ]

    async def call(self, call: ToolCall) -> str:
        """The tool's result as text; what went wrong with the call as text too (the policy's call)."""
        tool = self.tools.get(call.name)
        if tool is None:
            return f"Error: unknown tool {call.name!r}; the tools are {sorted(self.tools)}"
        try:
            arguments = tool.arguments.model_validate(load_json_arguments(call.arguments))
        except ValueError as exc:
            return f"Error: invalid arguments for {call.name}: {exc}"
        values = {name: getattr(arguments, name) for name in type(arguments).model_fields}
        try:
            if inspect.iscoroutinefunction(tool.fn):
                result = await asyncio.wait_for(tool.fn(**values), TOOL_TIMEOUT_S)
            else:
                result = await asyncio.wait_for(asyncio.to_thread(tool.fn, **values), TOOL_TIMEOUT_S)
        except TimeoutError:
            return f"Error executing tool {call.name}: no result within {TOOL_TIMEOUT_S:g} s"
        except Exception as exc:  # what the tool raised on these arguments: the policy sees it
            return f"Error executing tool {call.name}: {type(exc).__name__}: {exc}"
        return result if isinstance(result, str) else json.dumps(result, default=str)

    async def stop(self) -> None:
        for toolset in self.toolsets:
            # what a Toolset's setup registered to be undone (verifiers unwinds it when its server stops)
            with contextlib.suppress(Exception):
                await toolset._exit_stack.aclose()
        self.toolsets = []


def _arguments_model(fn: Any) -> type[pydantic.BaseModel]:
    """A pydantic model of a tool's parameters: its JSON schema is declared, its validation checks calls."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(parameter.name, parameter.annotation)
        if annotation is inspect.Parameter.empty:
            annotation = Any
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    model: type[pydantic.BaseModel] = pydantic.create_model(f"{fn.__name__}_arguments", **fields)
    return model


# ---------------------------------------------------------------- the seat the policy plays


class _ScoringFailed(Exception):
    pass


class Exchange:
    """Stands in for verifiers' `Interaction`: the conversation of one seat, recorded on a Trace."""

    def __init__(self, episode: VerifiersEnv, task: Any, seat: str) -> None:
        self.episode = episode
        self.task = task
        self.trace: Trace = Trace(
            task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
            agent=AgentInfo(config=AgentConfig(), name=seat),
        )
        self.started = False
        self.over = False
        episode.traces.append(self.trace)
        if task.data.system_prompt:
            self._add(vf.SystemMessage(content=task.data.system_prompt))
        prompt = task.data.prompt
        for message in [vf.UserMessage(content=prompt)] if isinstance(prompt, str) else prompt or []:
            self._add(message)

    def _add(self, message: Any, sampled: bool = False) -> None:
        nodes = self.trace.nodes
        tools = self.episode.tools.declarations if not nodes else []
        nodes.append(
            MessageNode(
                parent=len(nodes) - 1 if nodes else None, message=message, sampled=sampled, tools=tools
            )
        )
        if not sampled:
            self.episode.pending.append(_palaestra_message(message))

    async def turn(self, message: Any = None) -> vf.Segment:
        if self.over:
            raise RuntimeError("the exchange is over (the run ended); read interaction.trace")
        prompted = not self.started and self.task.data.prompt is not None
        if message is None and not prompted:
            raise ValueError("nothing to run a turn on: this exchange takes its next user message")
        if message is not None and prompted:
            raise ValueError("the task's prompt opens this exchange: take its first reply with a bare turn()")
        self.started = True
        if isinstance(message, str):
            self._add(vf.UserMessage(content=message))
        elif message is not None:
            for item in message:
                self._add(_vf_message(item) if isinstance(item, Mapping) else item)
        if self.episode.turns >= self.episode.max_turns:
            self.over = True
            self.trace.stop("max_turns")
            return vf.Segment(messages=[], terminated=True)
        segment: list[Any] = []
        while True:
            reply = await self.episode.ask()
            calls = [
                vf.ToolCall(
                    id=call.id or f"call_{self.episode.turns}_{i}", name=call.name, arguments=call.arguments
                )
                for i, call in enumerate(reply.tool_calls)
            ]
            answer = vf.AssistantMessage(content=reply.content, tool_calls=calls or None)
            self._add(answer, sampled=True)
            segment.append(answer)
            if not calls:
                break
            for call in calls:
                text = await self.episode.tools.call(ToolCall(call.name, call.arguments, call.id))
                result = vf.ToolMessage(
                    tool_call_id=call.id, content=text[:MAX_TOOL_RESULT_CHARS], name=call.name
                )
                self._add(result)
                segment.append(result)
            if self.episode.turns >= self.episode.max_turns:
                self.trace.stop("max_turns")
                break
        return vf.Segment(messages=segment)

    async def finish(self, condition: str) -> None:
        """The exchange ended normally: the task's rewards and metrics score the trace."""
        self.over = True
        self.trace.stop(condition)
        self.trace.ok = True
        try:
            await self.task.score(self.trace)
        except Exception as exc:
            raise _ScoringFailed(f"{type(exc).__name__}: {exc}") from exc


class Seat:
    """Stands in for verifiers' `Agent` in the one seat: the Palaestra client plays it."""

    def __init__(self, episode: VerifiersEnv, name: str) -> None:
        self.episode = episode
        self.name = name
        self.trainable = True

    async def run(self, task: Any, **_: Any) -> Trace:
        """One segment on the task's prompt (the policy may call tools), then scoring."""
        exchange = Exchange(self.episode, task, self.name)
        await exchange.turn()
        await exchange.finish("agent_completed")
        return exchange.trace

    @contextlib.asynccontextmanager
    async def interaction(self, task: Any, **_: Any) -> AsyncIterator[Exchange]:
        exchange = Exchange(self.episode, task, self.name)
        yield exchange  # an exception from the environment's code passes through: no scoring
        await exchange.finish("user_closed")


class Agents:
    def __init__(self, seats: Mapping[str, Seat]) -> None:
        self._seats = dict(seats)

    def __getattr__(self, name: str) -> Seat:
        seats = self.__dict__.get("_seats") or {}
        if name not in seats:
            raise AttributeError(f"no agent {name!r}; this environment declares {sorted(seats)}")
        return seats[name]


# ---------------------------------------------------------------- the Palaestra environment


class VerifiersEnv(AsyncEnv):
    """One episode: the verifiers code runs as a task; each policy reply resumes it."""

    def __init__(self, served: Served, context: EnvContext) -> None:
        self.served = served
        self.context = context
        self.max_turns = int(context.options.get("max_turns", DEFAULT_MAX_TURNS))
        self.operator = operator_config(served, context.config)
        self.config = taskset_config(served, context.options, self.operator)  # refused: INVALID_ARGUMENT
        self.tools = Tools()
        self.traces: list[Trace] = []
        self.pending: list[Message] = []
        self.turns = 0
        self.failed: str | None = None  # the environment raised after the policy's reply (see the module doc)
        self.task: Any = None
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._reply: asyncio.Future[Message] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._first = True

    async def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        await self._stop()
        merged = {**self.context.options, **(options or {})}
        config = taskset_config(self.served, merged, self.operator) if options else self.config
        self.max_turns = int(merged.get("max_turns", DEFAULT_MAX_TURNS))
        tasks = await asyncio.to_thread(load_tasks, self.served, config)
        if not tasks:
            raise InfraError("environment", f"{self.served.env_id}: the taskset yields no tasks")
        self.task = pick_task(tasks, self.context.task, seed)
        self.tools = Tools()
        self.traces, self.pending, self.turns, self._first = [], [], 0, True
        self.failed = None
        self._events = asyncio.Queue()
        await self.tools.start(self.served, config, self.task)
        self._runner = asyncio.create_task(self._drive(self.task, config))
        return await self._next()

    async def step(self, actions: Mapping[str, Action]) -> StepResult:
        if self._reply is None:
            raise InvalidAction("the episode has ended")
        message = _assistant_message(actions)
        if len(message.tool_calls) > MAX_TOOL_CALLS_PER_STEP:
            raise InvalidAction(f"at most {MAX_TOOL_CALLS_PER_STEP} tool calls per message")
        reply, self._reply = self._reply, None
        reply.set_result(message)
        return await self._next()

    async def close(self) -> None:
        await self._stop()

    # ------------------------------------------------------------ the bridge

    async def ask(self) -> Message:
        """Called by the seat: deliver what is pending and wait for the policy's reply."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        messages, self.pending = self.pending, []
        self._events.put_nowait(("act", (messages, future)))
        reply = await future
        self.turns += 1
        return reply

    async def _drive(self, task: Any, config: Any) -> None:
        seat = Seat(self, self.served.seat)
        try:
            if self.served.env_class is None:
                await seat.run(task)
            else:
                env_config = self.served.env_config_class.model_validate({"taskset": config.model_dump()})
                env = self.served.env_class(env_config)
                agents = Agents({self.served.seat: seat})
                await env.setup(agents)
                await env.run(task, agents)
                episode = VfEpisode(
                    env=EnvInfo(id=self.served.name),
                    task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
                )
                episode.traces.extend(self.traces)
                await env.finalize(task, episode)
            if not self.traces:
                raise RuntimeError("the environment ran no turn of its agent")
        except Exception as exc:
            detail = (
                f"scoring failed: {exc}"
                if isinstance(exc, _ScoringFailed)
                else f"{type(exc).__name__}: {exc}"
            )
            if not self.turns:  # before the policy's first reply: it cannot have caused this
                self._events.put_nowait(
                    ("error", InfraError("environment", f"{self.served.env_id}: {detail}"))
                )
                return
            self.context.logger.warning(
                "raised after the policy's reply, so scored 0 as its failure: %s", detail
            )
            self.failed = detail
        self._events.put_nowait(("done", None))

    async def _next(self) -> StepResult:
        kind, payload = await self._events.get()
        if kind == "error":
            await self._stop()
            raise payload
        if kind == "act":
            messages, self._reply = payload
            tools = self.tools.schemas() if self._first else []
            self._first = False
            info = {
                "task": self.task.data.name or self.task.data.id or self.task.data.idx,
                "turn": self.turns,
            }
            return StepResult.single(
                AgentResult(observation=Observation(messages=messages, tools=tools), info=info)
            )
        return self._final()

    def _final(self) -> StepResult:
        if self.failed is not None:
            return self._failed_final(self.failed)
        components = []
        metrics: dict[str, float] = {}
        for trace in self.traces:
            for name, reward in trace.rewards.items():
                if reward is None:
                    continue
                label = name if name in self.served.declared else ENV_FAMILY + name
                components.append(RewardComponent(label, RewardKind.OUTCOME, reward.score, reward.weight))
            metrics.update({k: v for k, v in trace.metrics.items() if v is not None})
        truncated = any(trace.stop_condition == "max_turns" for trace in self.traces)
        info = {"metrics": metrics, "stop_condition": [trace.stop_condition for trace in self.traces]}
        pending, self.pending = self.pending, []
        result = AgentResult(
            observation=Observation(messages=pending),
            components=components,
            terminated=not truncated,
            truncated=truncated,
            info=info,
        )
        return StepResult.single(result)

    def _failed_final(self, detail: str) -> StepResult:
        """The end of an episode whose environment raised after the policy's reply: reward 0, every reward
        function ERROR (not computed), so the episode is trained on as the policy's failure."""
        names = [name for name, _ in self.served.rewards] or [ENV_FAMILY + "error"]
        weights = dict(self.served.rewards)
        components = [
            RewardComponent(
                name, RewardKind.OUTCOME, 0.0, weights.get(name, 1.0), ComponentStatus.ERROR, detail
            )
            for name in names
        ]
        pending, self.pending = self.pending, []
        info = {"error": detail, "stop_condition": ["error"]}
        return StepResult.single(
            AgentResult(
                observation=Observation(messages=pending), components=components, terminated=True, info=info
            )
        )

    async def _stop(self) -> None:
        runner, self._runner = self._runner, None
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
        self._reply = None
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        await self.tools.stop()


def _assistant_message(actions: Mapping[str, Action]) -> Message:
    if DEFAULT_AGENT in actions:
        action = actions[DEFAULT_AGENT]
    elif len(actions) == 1:
        action = next(iter(actions.values()))
    else:
        raise InvalidAction(f"expected one action for {DEFAULT_AGENT!r}, got {sorted(actions)}")
    if action.message is not None:
        if action.message.role not in ("", "assistant"):
            raise InvalidAction(f"actions are assistant messages, not {action.message.role!r} messages")
        return Message("assistant", action.message.content, tool_calls=list(action.message.tool_calls))
    if action.text is not None:
        return Message("assistant", action.text)
    raise InvalidAction(f"expected a text or message action, got a {action.kind} action")


def _palaestra_message(message: Any) -> Message:
    content = message.content if isinstance(message.content, str) else content_text(message.content)
    if isinstance(message, vf.ToolMessage):
        return Message("tool", content, name=message.name or "", tool_call_id=message.tool_call_id)
    return Message(message.role, content or "")


def _vf_message(item: Mapping[str, Any]) -> Any:
    role = item.get("role")
    kinds = {"system": vf.SystemMessage, "user": vf.UserMessage, "assistant": vf.AssistantMessage}
    if role == "tool":
        return vf.ToolMessage.model_validate(item)
    if role not in kinds:
        raise ValueError(f"a message with role {role!r}")
    return kinds[role].model_validate(item)
