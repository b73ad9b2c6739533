"""The conversation loop shared by every tool environment.

One episode: the system message (the domain's policy) and the user's first message arrive with the
tool declarations. Each agent action is an assistant message. With tool calls, the environment answers
each call with a `tool` message (results or errors) and the turn goes on; without tool calls, the
message is the agent's reply to the user: the turn ends, the checklist closes the turn, and the simulated
user either says the next turn's message or is done. The outcome is scored when the episode ends (user
done, a required checklist item failed, or the step limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from palaestra.env import AsyncEnv, EnvContext, InvalidAction
from palaestra.llm import named_endpoint
from palaestra.plugins.tools.tasks import Domain, Task
from palaestra.plugins.tools.toolbox import INVALID_CALL_KINDS, POLICY_KIND
from palaestra.plugins.tools.users import GOODBYE, ModelUser, ScriptedUser, SimulatedUser
from palaestra.rewards.checklist import ChatEndpoint, ChecklistRun, JudgeContext, Mode, Reply, ToolCallRecord
from palaestra.types import (
    DEFAULT_AGENT,
    Action,
    AgentResult,
    ChatSpace,
    ChecklistItemResult,
    EnvSpec,
    Message,
    Observation,
    RewardComponent,
    RewardComponentSpec,
    RewardKind,
    StepResult,
)

MAX_TOOL_CALLS_PER_STEP = 16
MAX_TOOL_RESULT_CHARS = 8000


@dataclass(frozen=True)
class Settings:
    """Per-episode knobs, from the plugin config overridden by the client's open options."""

    checklist_mode: Mode = "dense"
    stop_on_required: bool = True
    checklist_scale: float = 1.0
    invalid_call_penalty: float = 0.1
    policy_penalty: float = 0.25
    # The name of one of the server's [llm.NAME] endpoints (the only form open options may use), or an
    # endpoint table in the operator's [plugins.tools] config; None: the scripted user.
    user_model: str | Mapping[str, Any] | None = None

    @classmethod
    def from_tables(cls, *tables: Mapping[str, Any]) -> Settings:
        merged: dict[str, Any] = {}
        for table in tables:
            merged.update({k: v for k, v in table.items() if k in cls.__dataclass_fields__})
        return cls(**merged)


def reward_component_specs(domain: Domain) -> tuple[RewardComponentSpec, ...]:
    outcome = tuple(
        RewardComponentSpec(n, RewardKind.OUTCOME, low=0.0, high=1.0) for n in domain.outcome_components
    )
    calls = float(MAX_TOOL_CALLS_PER_STEP)
    return (
        *outcome,
        RewardComponentSpec(
            "checklist", RewardKind.CHECKLIST, "weight of checklist items newly satisfied", 0, 1
        ),
        RewardComponentSpec(
            "checklist_not_run", RewardKind.CHECKLIST, "items whose judge could not run", 0, 0
        ),
        RewardComponentSpec(
            "invalid_tool_call", RewardKind.PENALTY, "-1 per unknown tool or bad arguments", -calls, 0
        ),
        RewardComponentSpec(
            "policy_violation", RewardKind.PENALTY, "-1 per call refused by the policy", -calls, 0
        ),
    )


def _penalty(description: str) -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": 100, "description": description}


# The open options of every tool environment (the Settings fields, plus the task for reset options).
OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task": {"type": ["integer", "string"], "description": "a task index or id"},
        "checklist_mode": {"enum": ["dense", "sparse"], "description": "when checklist items are judged"},
        "stop_on_required": {"type": "boolean", "description": "end the episode when a required item fails"},
        "checklist_scale": {
            "type": "number",
            "minimum": 0,
            "maximum": 100,
            "description": "checklist weight",
        },
        "invalid_call_penalty": _penalty("weight of the invalid_tool_call penalty"),
        "policy_penalty": _penalty("weight of the policy_violation penalty"),
        "user_model": {
            "type": "string",
            "minLength": 1,
            "description": "the name of a server [llm.NAME] endpoint",
        },
    },
    "additionalProperties": False,
}


def make_spec(env_id: str, domain: Domain, tags: tuple[str, ...] = ()) -> EnvSpec:
    return EnvSpec(
        id=env_id,
        description=domain.description,
        observation_space=ChatSpace(),
        action_space=ChatSpace(),
        reward_components=reward_component_specs(domain),
        tags=("tools", "chat", "multi-turn", *tags),
        max_episode_steps=domain.max_episode_steps,
        num_tasks=len(domain.tasks()),
        options_schema=OPTIONS_SCHEMA,
    )


def assistant_message(action: Action) -> Message:
    if action.message is not None:
        if action.message.role not in ("", "assistant"):
            raise InvalidAction(f"actions are assistant messages, not {action.message.role!r} messages")
        m = action.message
        return Message("assistant", m.content, m.name, list(m.tool_calls))
    if action.text is not None:
        return Message("assistant", action.text)
    raise InvalidAction(f"expected a text or message action, got a {action.kind} action")


class ToolChatEnv(AsyncEnv):
    def __init__(self, domain: Domain, ctx: EnvContext) -> None:
        self.domain = domain
        self.ctx = ctx
        self.settings = Settings.from_tables(ctx.config, ctx.options)
        if "user_model" in ctx.options:  # a client may pick a configured endpoint by name, nothing else
            named_endpoint(ctx.llm, ctx.options["user_model"], "user_model")
        self.state: Any = None
        self.done = False

    # ------------------------------------------------------------ episode start

    async def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        await self._release()
        await self.domain.prepare()
        selector = (options or {}).get("task", self.ctx.options.get("task", self.ctx.task))
        self.task = self.domain.select(selector, seed)
        self.state = self.domain.new_state(self.task)
        self.user = self._make_user(self.task)
        self.checklist = ChecklistRun(
            self.task.checklist,
            self.settings.checklist_mode,
            self.settings.stop_on_required,
        )
        # Each turn's items sum to 1; dividing by the number of turns keeps an episode's checklist in [0, 1].
        turns_with_items = len({item.turn for item in self.task.checklist}) or 1
        self.checklist_weight = self.settings.checklist_scale / turns_with_items
        self.turn = 0
        self.steps = 0
        self.done = False
        self.tool_calls: list[ToolCallRecord] = []
        self.replies: list[Reply] = []
        first = [Message("system", self.domain.system_prompt()), Message("user", await self.user.opening())]
        self.messages: list[Message] = list(first)
        observation = Observation(
            messages=first,
            tools=self.domain.toolbox().schemas(),
            info={"task_id": self.task.id, "turn": 0, "domain": self.domain.name},
        )
        return StepResult.single(AgentResult(observation=observation))

    def _make_user(self, task: Task) -> SimulatedUser:
        chosen = self.settings.user_model
        if isinstance(chosen, str):
            return ModelUser(task, named_endpoint(self.ctx.llm, chosen, "user_model"))
        if chosen:
            return ModelUser(task, ChatEndpoint.from_config(chosen))
        return ScriptedUser(task)

    # ------------------------------------------------------------ steps

    async def step(self, actions: Mapping[str, Action]) -> StepResult:
        if self.done:
            raise InvalidAction("the episode has ended")
        message = assistant_message(_only_action(actions))
        if len(message.tool_calls) > MAX_TOOL_CALLS_PER_STEP:
            raise InvalidAction(f"at most {MAX_TOOL_CALLS_PER_STEP} tool calls per message")
        self.steps += 1
        self.messages.append(message)
        if message.content:
            self.replies.append(Reply(self.turn, self.steps, message.content))
        components: list[RewardComponent] = []
        new_messages = await self._run_calls(message, components) if message.tool_calls else []
        turn_ended = not message.tool_calls

        check = await self.checklist.step(self._judge_context(), turn_ended)
        components += check.components(self.checklist_weight)
        results: list[ChecklistItemResult] = list(check.results)
        stop_reason = ""
        if turn_ended:
            stop_reason = check.stop_reason if check.stop else await self._next_user_turn(new_messages)
        terminated = bool(stop_reason)
        truncated = not terminated and self.steps >= self.domain.max_episode_steps
        if truncated:
            stop_reason = f"step limit {self.domain.max_episode_steps} reached"
        if terminated or truncated:
            components += self.domain.outcome(self.task, self.state, self._judge_context())
            results += self.checklist.finish(self.turn)
            await self._release()
            self.done = True
        info: dict[str, Any] = {"turn": self.turn, "step": self.steps}
        if stop_reason:
            info["stop_reason"] = stop_reason
        return StepResult.single(
            AgentResult(
                observation=Observation(messages=new_messages),
                components=components,
                checklist=results,
                terminated=terminated,
                truncated=truncated,
                info=info,
            )
        )

    async def _run_calls(self, message: Message, components: list[RewardComponent]) -> list[Message]:
        replies = []
        invalid = policy = 0
        for index, call in enumerate(message.tool_calls):
            call.id = call.id or f"call_{self.steps}_{index}"
            outcome = await self.domain.call_tool(self.state, call.name, call.arguments)
            content = outcome.content[:MAX_TOOL_RESULT_CHARS]
            self.tool_calls.append(
                ToolCallRecord(
                    self.turn,
                    self.steps,
                    call.name,
                    outcome.arguments,
                    outcome.ok,
                    content,
                    outcome.error_kind,
                )
            )
            invalid += outcome.error_kind in INVALID_CALL_KINDS
            policy += outcome.error_kind == POLICY_KIND
            replies.append(Message("tool", content, name=call.name, tool_call_id=call.id))
        if invalid:
            components.append(
                RewardComponent(
                    "invalid_tool_call",
                    RewardKind.PENALTY,
                    -float(invalid),
                    self.settings.invalid_call_penalty,
                )
            )
        if policy:
            components.append(
                RewardComponent(
                    "policy_violation", RewardKind.PENALTY, -float(policy), self.settings.policy_penalty
                )
            )
        self.messages.extend(replies)
        return replies

    async def _next_user_turn(self, new_messages: list[Message]) -> str:
        """Adds the user's next message; returns a stop reason when the user is done."""
        text = await self.user.respond(self.messages)
        if text is None:
            goodbye = Message("user", GOODBYE)
            self.messages.append(goodbye)
            new_messages.append(goodbye)
            return "the user is done"
        self.turn += 1
        user_message = Message("user", text)
        self.messages.append(user_message)
        new_messages.append(user_message)
        return ""

    def _judge_context(self) -> JudgeContext:
        return JudgeContext(
            turn=self.turn,
            step=self.steps,
            messages=self.messages,
            tool_calls=self.tool_calls,
            replies=self.replies,
            state=self.domain.judge_state(self.state),
        )

    # ------------------------------------------------------------ end

    async def _release(self) -> None:
        if self.state is not None:
            state, self.state = self.state, None
            await self.domain.close_state(state)

    async def close(self) -> None:
        await self._release()


def _only_action(actions: Mapping[str, Action]) -> Action:
    if DEFAULT_AGENT in actions:
        return actions[DEFAULT_AGENT]
    if len(actions) == 1:
        return next(iter(actions.values()))
    raise InvalidAction(f"expected one action for {DEFAULT_AGENT!r}, got {sorted(actions)}")
