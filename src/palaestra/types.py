"""The Python side of the wire contract: plain dataclasses that environments and clients use.

Environments never touch protobuf. They return these types, and `palaestra.wire` converts them to and
from the messages in `protos/palaestra/v1`. The names follow the proto messages one to one.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_AGENT = "agent"


class EnvKind(enum.Enum):
    SINGLE_AGENT = 1
    TURN_BASED = 2
    SIMULTANEOUS = 3


class RewardKind(enum.Enum):
    OUTCOME = 1
    PROCESS = 2
    CHECKLIST = 3
    FORMAT = 4
    PENALTY = 5


class ComponentStatus(enum.Enum):
    """Whether a reward component was actually computed. Only OK components count towards a reward."""

    OK = 1
    TIMEOUT = 2
    ERROR = 3
    NOT_RUN = 4


_OK = ComponentStatus.OK  # looked up on every step


# ---------------------------------------------------------------- spaces


@dataclass(frozen=True)
class DiscreteSpace:
    n: int
    start: int = 0


@dataclass(frozen=True)
class BoxSpace:
    shape: tuple[int, ...]
    dtype: str = "float32"
    low: tuple[float, ...] = ()  # flattened bounds; empty = unbounded
    high: tuple[float, ...] = ()


@dataclass(frozen=True)
class MultiDiscreteSpace:
    nvec: tuple[int, ...]


@dataclass(frozen=True)
class MultiBinarySpace:
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TextSpace:
    max_length: int = 0  # 0: no limit
    min_length: int = 0


@dataclass(frozen=True)
class ChatSpace:
    """Observations are chat messages; actions are text or an assistant message with tool calls."""


Space = DiscreteSpace | BoxSpace | MultiDiscreteSpace | MultiBinarySpace | TextSpace | ChatSpace


# ---------------------------------------------------------------- chat


# Bounds on tool-call arguments a policy writes (see `ToolCall.load_arguments`).
MAX_ARGUMENT_CHARS = 256_000
MAX_ARGUMENT_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS = re.compile(r"[\[\]{}]")


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text exactly as the model wrote it
    id: str = ""

    def load_arguments(self) -> dict[str, Any]:
        """The arguments as a JSON object; ValueError, saying why, for anything else: not JSON, not an
        object, longer than MAX_ARGUMENT_CHARS or nested deeper than MAX_ARGUMENT_DEPTH (so hostile
        input is the policy's failure, never a RecursionError). An empty string is ``{}``."""
        return load_json_arguments(self.arguments)


def load_json_arguments(text: str) -> dict[str, Any]:
    """See `ToolCall.load_arguments`. Linear in the length of `text`."""
    if not text.strip():
        return {}
    if len(text) > MAX_ARGUMENT_CHARS:
        raise ValueError(
            f"arguments are {len(text)} characters long; at most {MAX_ARGUMENT_CHARS} are accepted"
        )
    depth = deepest = 0
    for bracket in _JSON_BRACKETS.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_ARGUMENT_DEPTH:
        raise ValueError(
            f"arguments are nested {deepest} deep; at most {MAX_ARGUMENT_DEPTH} levels are accepted"
        )
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"arguments must be a JSON object, got {type(value).__name__}")
    return value


@dataclass
class Message:
    role: str  # system | user | assistant | tool
    content: str = ""
    name: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str = ""


# ---------------------------------------------------------------- observations and actions


@dataclass
class Observation:
    """What one agent sees. `messages` holds only what is new since this agent's last turn."""

    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)  # OpenAI function-call schemas
    tensor: np.ndarray | None = None
    action_mask: np.ndarray | None = None
    legal_actions: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Action:
    """Exactly one of the fields is set."""

    text: str | None = None
    message: Message | None = None
    discrete: int | None = None
    tensor: np.ndarray | None = None

    @property
    def kind(self) -> str:
        for name in ("text", "message", "discrete", "tensor"):
            if getattr(self, name) is not None:
                return name
        return "empty"

    def as_text(self) -> str:
        """The text of a text action or the content of a message action ('' otherwise)."""
        if self.text is not None:
            return self.text
        if self.message is not None:
            return self.message.content
        return ""


# ---------------------------------------------------------------- rewards


@dataclass
class RewardComponent:
    name: str
    kind: RewardKind
    value: float
    weight: float = 1.0
    status: ComponentStatus = ComponentStatus.OK
    detail: str = ""

    @property
    def contribution(self) -> float:
        """weight * value when the component was computed; a failed component contributes nothing."""
        return self.weight * self.value if self.status is _OK else 0.0


@dataclass
class Evidence:
    turn: int
    step: int
    snippet: str


@dataclass
class ChecklistItemResult:
    item_id: str
    turn: int
    passed: bool
    weight: float
    score: float | None = None  # defaults to 1.0 / 0.0 from `passed`
    status: ComponentStatus = ComponentStatus.OK
    reason: str = ""
    evidence: list[Evidence] = field(default_factory=list)


def total_reward(components: list[RewardComponent]) -> float:
    """The scalar reward of a step: the weighted sum of the components that were computed.
    (A plain loop: it runs for every step, and a generator over `contribution` costs several times more.)"""
    total = 0.0
    for c in components:
        if c.status is _OK:
            total += c.weight * c.value
    return total


# ---------------------------------------------------------------- results


@dataclass
class AgentResult:
    """One agent's share of a reset or step result.

    `reward` defaults to the weighted sum of `components` when left as None.
    """

    observation: Observation = field(default_factory=Observation)
    reward: float | None = None
    components: list[RewardComponent] = field(default_factory=list)
    checklist: list[ChecklistItemResult] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def scalar_reward(self) -> float:
        return total_reward(self.components) if self.reward is None else self.reward

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@dataclass
class InfraFailure:
    """The infrastructure failed (sandbox, verifier, environment crash): not a reward of any kind."""

    source: str
    message: str


@dataclass
class StepResult:
    """What an environment returns from reset and step: a result for each agent that has news."""

    agents: dict[str, AgentResult]
    next_agent: str = ""  # turn-based: who acts next
    infra_failure: InfraFailure | None = None

    @classmethod
    def single(cls, result: AgentResult, agent: str = DEFAULT_AGENT) -> StepResult:
        return cls(agents={agent: result})

    @property
    def done(self) -> bool:
        return self.infra_failure is not None or all(r.done for r in self.agents.values())


@dataclass
class RewardComponentSpec:
    """One reward component an environment may report. `name` may end in ``*`` to declare a family
    (``checklist.*``). `low`/`high` bound the component's value (None: unbounded on that side).

    The server checks every step result against these: a component that is not declared, has another
    kind, is NaN or infinite, or lies outside its range is the environment's bug (an infrastructure
    failure, never a reward). FORMAT and PENALTY components are never positive: 0 when the reply is
    fine, negative when it is not (see docs/writing-a-plugin.md, "Rewards")."""

    name: str
    kind: RewardKind
    description: str = ""
    low: float | None = None
    high: float | None = None


@dataclass
class EnvSpec:
    """What the catalog says about an environment."""

    id: str
    description: str
    observation_space: Space
    action_space: Space
    kind: EnvKind = EnvKind.SINGLE_AGENT
    agents: tuple[str, ...] = (DEFAULT_AGENT,)
    reward_components: tuple[RewardComponentSpec, ...] = ()
    tags: tuple[str, ...] = ()
    max_episode_steps: int = 0
    num_tasks: int = 0
    plugin: str = ""
    plugin_version: str = ""
    # JSON Schema of the open options (an object schema); the server validates options against it at
    # open and at reset (INVALID_ARGUMENT naming the option) and turns integral floats back into ints
    # where it says "integer". None: the plugin declares none and sees the options unchecked.
    options_schema: dict[str, Any] | None = None
    sandbox_profiles: tuple[str, ...] = ()  # sandbox profiles the environment leases (for `isolation`)
    isolation: str = ""  # filled by the server: the isolation in force for this environment


@dataclass
class ComponentTotal:
    name: str
    kind: RewardKind
    total: float
    count: int
    not_ok: int


@dataclass
class AgentSummary:
    agent: str
    episode_return: float
    components: list[ComponentTotal]


@dataclass
class EpisodeSummary:
    episode_id: str
    env_id: str
    steps: int
    agents: list[AgentSummary]
    infra_failure: InfraFailure | None
    terminated: bool
    truncated: bool
    wall_seconds: float
    env_seconds: float
    close_reason: str


@dataclass
class EpisodeStep:
    """A client's view of one episode after open, reset or step."""

    episode_id: str
    agents: dict[str, AgentResult]
    next_agent: str = ""
    done: bool = False
    infra_failure: InfraFailure | None = None
    step_index: int = 0

    @property
    def result(self) -> AgentResult:
        """The only agent's result (single-agent envs), or the next agent's."""
        if len(self.agents) == 1:
            return next(iter(self.agents.values()))
        if self.next_agent in self.agents:
            return self.agents[self.next_agent]
        raise ValueError(
            f"episode {self.episode_id} has results for {sorted(self.agents)}; pick one by agent"
        )
