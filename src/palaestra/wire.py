"""Conversion between the Python types of `palaestra.types` and the protobuf messages of palaestra.v1.

This is the one place that knows both sides; the server and the clients only call `to_proto_*` and
`from_proto_*` here.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf import struct_pb2

from palaestra import types as t
from palaestra.v1 import catalog_pb2, types_pb2

# ---------------------------------------------------------------- scalars and structs

# Proto enum fields are typed as NewType ints by mypy-protobuf; plain ints are what they hold at runtime.
_DTYPES: dict[str, Any] = {
    "float32": types_pb2.DTYPE_FLOAT32,
    "float64": types_pb2.DTYPE_FLOAT64,
    "int8": types_pb2.DTYPE_INT8,
    "int16": types_pb2.DTYPE_INT16,
    "int32": types_pb2.DTYPE_INT32,
    "int64": types_pb2.DTYPE_INT64,
    "uint8": types_pb2.DTYPE_UINT8,
    "bool": types_pb2.DTYPE_BOOL,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
# Hot-path lookups (a classic-RL env sends a tensor on every step): dtype objects to codes and back.
_CODES_BY_DTYPE: dict[np.dtype[Any], Any] = {np.dtype(name): code for name, code in _DTYPES.items()}
_WIRE_DTYPES: dict[int, np.dtype[Any]] = {
    code: np.dtype(name).newbyteorder("<") for name, code in _DTYPES.items()
}
_LITTLE_ENDIAN_HOST = sys.byteorder == "little"


def dtype_to_proto(dtype: str | np.dtype[Any] | type) -> Any:
    if isinstance(dtype, np.dtype) and dtype in _CODES_BY_DTYPE:
        return _CODES_BY_DTYPE[dtype]
    name = np.dtype(dtype).name
    if name not in _DTYPES:
        raise ValueError(f"dtype {name} cannot travel; supported: {', '.join(_DTYPES)}")
    return _DTYPES[name]


def dtype_from_proto(code: int) -> str:
    if code not in _DTYPE_NAMES:
        raise ValueError(
            f"tensor dtype is unspecified or unknown ({code}); expected one of {', '.join(_DTYPES)}"
        )
    return _DTYPE_NAMES[code]


def _enum(member: Any) -> Any:
    """The wire value of one of our Python enums (their values equal the proto enum numbers)."""
    return member.value


def struct_from_dict(data: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if data:
        message.update(_jsonable(data))
    return message


def dict_from_struct(message: struct_pb2.Struct) -> dict[str, Any]:
    """The Struct as plain Python values (numbers are floats, as the Struct holds them). Unlike
    `json_format.MessageToDict` it keeps NaN and infinities, so validation can refuse them by name."""
    return {key: _from_value(value) for key, value in message.fields.items()} if message.fields else {}


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {key: _from_value(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_from_value(item) for item in value.list_value.values]
    return None


def _jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    """Info dicts may hold numpy scalars and arrays; Struct only takes JSON values."""
    result: dict[str, Any] = json.loads(json.dumps(data, default=_json_default))
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


# ---------------------------------------------------------------- tensors


def tensor_to_proto(array: np.ndarray, out: types_pb2.Tensor | None = None) -> types_pb2.Tensor:
    array = np.asarray(array)
    message = out if out is not None else types_pb2.Tensor()
    message.dtype = dtype_to_proto(array.dtype)
    message.shape[:] = array.shape
    if not (_LITTLE_ENDIAN_HOST and array.dtype.isnative):  # the wire is little-endian
        array = array.astype(array.dtype.newbyteorder("<"))
    message.data = array.tobytes(order="C")
    return message


def tensor_from_proto(message: types_pb2.Tensor) -> np.ndarray:
    dtype = _WIRE_DTYPES.get(message.dtype) or np.dtype(dtype_from_proto(message.dtype))  # raises if unknown
    shape = tuple(message.shape)
    expected = math.prod(shape) * dtype.itemsize
    if len(message.data) != expected:
        raise ValueError(
            f"tensor of shape {shape} and dtype {dtype.name} needs {expected} bytes, got {len(message.data)}"
        )
    array = np.frombuffer(message.data, dtype=dtype).reshape(shape)
    return array if _LITTLE_ENDIAN_HOST else array.astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------- spaces


def space_to_proto(space: t.Space) -> types_pb2.Space:
    message = types_pb2.Space()
    match space:
        case t.DiscreteSpace(n=n, start=start):
            message.discrete.n, message.discrete.start = n, start
        case t.BoxSpace(shape=shape, dtype=dtype, low=low, high=high):
            message.box.dtype = dtype_to_proto(dtype)
            message.box.shape[:] = shape
            message.box.low[:] = low
            message.box.high[:] = high
        case t.MultiDiscreteSpace(nvec=nvec):
            message.multi_discrete.nvec[:] = nvec
        case t.MultiBinarySpace(shape=shape):
            message.multi_binary.shape[:] = shape
        case t.TextSpace(max_length=max_length, min_length=min_length):
            message.text.max_length, message.text.min_length = max_length, min_length
        case t.ChatSpace():
            message.chat.SetInParent()
        case _:
            raise TypeError(f"not a space: {space!r}")
    return message


def space_from_proto(message: types_pb2.Space) -> t.Space:
    which = message.WhichOneof("space")
    if which == "discrete":
        return t.DiscreteSpace(n=message.discrete.n, start=message.discrete.start)
    if which == "box":
        box = message.box
        return t.BoxSpace(
            shape=tuple(box.shape),
            dtype=dtype_from_proto(box.dtype),
            low=tuple(box.low),
            high=tuple(box.high),
        )
    if which == "multi_discrete":
        return t.MultiDiscreteSpace(nvec=tuple(message.multi_discrete.nvec))
    if which == "multi_binary":
        return t.MultiBinarySpace(shape=tuple(message.multi_binary.shape))
    if which == "text":
        return t.TextSpace(max_length=message.text.max_length, min_length=message.text.min_length)
    return t.ChatSpace()


# ---------------------------------------------------------------- chat


def message_to_proto(message: t.Message, out: types_pb2.Message | None = None) -> types_pb2.Message:
    proto = out if out is not None else types_pb2.Message()
    proto.role = message.role
    proto.content = message.content
    proto.name = message.name
    proto.tool_call_id = message.tool_call_id
    for call in message.tool_calls:
        proto.tool_calls.add(id=call.id, name=call.name, arguments=call.arguments)
    return proto


# The *_from_proto functions below run for every result a client gets: they test an often-empty repeated
# field, or a Struct with HasField, before converting it (converting an empty one costs several times more).


def message_from_proto(proto: types_pb2.Message) -> t.Message:
    calls = proto.tool_calls
    return t.Message(
        role=proto.role,
        content=proto.content,
        name=proto.name,
        tool_calls=[t.ToolCall(name=c.name, arguments=c.arguments, id=c.id) for c in calls] if calls else [],
        tool_call_id=proto.tool_call_id,
    )


# ---------------------------------------------------------------- observations and actions


def observation_to_proto(obs: t.Observation, out: types_pb2.Observation) -> None:
    for message in obs.messages:
        message_to_proto(message, out.messages.add())
    for tool in obs.tools:
        out.tools.add(json=json.dumps(tool))
    if obs.tensor is not None:
        tensor_to_proto(obs.tensor, out.tensor)
    if obs.action_mask is not None:
        tensor_to_proto(obs.action_mask, out.action_mask)
    out.legal_actions.extend(obs.legal_actions)
    if obs.info:
        out.info.update(_jsonable(obs.info))


def observation_from_proto(proto: types_pb2.Observation) -> t.Observation:
    tools, legal = proto.tools, proto.legal_actions
    return t.Observation(
        messages=[message_from_proto(m) for m in proto.messages],
        tools=[json.loads(tool.json) for tool in tools] if tools else [],
        tensor=tensor_from_proto(proto.tensor) if proto.HasField("tensor") else None,
        action_mask=tensor_from_proto(proto.action_mask) if proto.HasField("action_mask") else None,
        legal_actions=list(legal) if legal else [],
        info=dict_from_struct(proto.info) if proto.HasField("info") else {},
    )


def action_to_proto(action: t.Action, out: types_pb2.Action | None = None) -> types_pb2.Action:
    proto = out if out is not None else types_pb2.Action()
    if action.text is not None:
        proto.text = action.text
    elif action.message is not None:
        message_to_proto(action.message, proto.message)
    elif action.discrete is not None:
        proto.discrete = int(action.discrete)
    elif action.tensor is not None:
        tensor_to_proto(action.tensor, proto.tensor)
    return proto


def action_from_proto(proto: types_pb2.Action) -> t.Action:
    which = proto.WhichOneof("action")
    if which == "text":
        return t.Action(text=proto.text)
    if which == "message":
        return t.Action(message=message_from_proto(proto.message))
    if which == "discrete":
        return t.Action(discrete=proto.discrete)
    if which == "tensor":
        return t.Action(tensor=tensor_from_proto(proto.tensor))
    return t.Action()


# ---------------------------------------------------------------- rewards and results


def component_to_proto(c: t.RewardComponent, out: types_pb2.RewardComponent) -> None:
    out.name, out.value, out.weight, out.detail = c.name, c.value, c.weight, c.detail
    out.kind, out.status = _enum(c.kind), _enum(c.status)


# Enum lookups by wire value (0, unset, means the default); calling the Enum class is several times slower.
_REWARD_KINDS = {0: t.RewardKind.OUTCOME, **{kind.value: kind for kind in t.RewardKind}}
_STATUSES = {0: t.ComponentStatus.OK, **{status.value: status for status in t.ComponentStatus}}


def _reward_kind(value: int) -> t.RewardKind:
    return _REWARD_KINDS.get(value) or t.RewardKind(value)  # an unknown value raises ValueError


def _status(value: int) -> t.ComponentStatus:
    return _STATUSES.get(value) or t.ComponentStatus(value)


def component_from_proto(p: types_pb2.RewardComponent) -> t.RewardComponent:
    return t.RewardComponent(
        name=p.name,
        kind=_reward_kind(p.kind),
        value=p.value,
        weight=p.weight,
        status=_status(p.status),
        detail=p.detail,
    )


def checklist_to_proto(item: t.ChecklistItemResult, out: types_pb2.ChecklistItemResult) -> None:
    out.item_id, out.turn, out.passed, out.weight = item.item_id, item.turn, item.passed, item.weight
    out.score = item.score if item.score is not None else float(item.passed)
    out.status, out.reason = _enum(item.status), item.reason
    for ev in item.evidence:
        out.evidence.add(turn=ev.turn, step=ev.step, snippet=ev.snippet)


def checklist_from_proto(p: types_pb2.ChecklistItemResult) -> t.ChecklistItemResult:
    return t.ChecklistItemResult(
        item_id=p.item_id,
        turn=p.turn,
        passed=p.passed,
        weight=p.weight,
        score=p.score,
        status=_status(p.status),
        reason=p.reason,
        evidence=[t.Evidence(turn=e.turn, step=e.step, snippet=e.snippet) for e in p.evidence],
    )


def agent_result_to_proto(agent: str, result: t.AgentResult, out: types_pb2.AgentResult) -> None:
    out.agent = agent
    observation_to_proto(result.observation, out.observation)
    out.reward = result.scalar_reward
    for component in result.components:
        component_to_proto(component, out.components.add())
    for item in result.checklist:
        checklist_to_proto(item, out.checklist.add())
    out.terminated, out.truncated = result.terminated, result.truncated
    if result.info:
        out.info.update(_jsonable(result.info))


def agent_result_from_proto(p: types_pb2.AgentResult) -> t.AgentResult:
    checklist = p.checklist
    return t.AgentResult(
        observation=observation_from_proto(p.observation),
        reward=p.reward,
        components=[component_from_proto(c) for c in p.components],
        checklist=[checklist_from_proto(c) for c in checklist] if checklist else [],
        terminated=p.terminated,
        truncated=p.truncated,
        info=dict_from_struct(p.info) if p.HasField("info") else {},
    )


def infra_failure_from_proto(p: types_pb2.EpisodeResult) -> t.InfraFailure | None:
    if not p.HasField("infra_failure"):
        return None
    return t.InfraFailure(source=p.infra_failure.source, message=p.infra_failure.message)


def episode_step_from_proto(p: types_pb2.EpisodeResult) -> t.EpisodeStep:
    return t.EpisodeStep(
        episode_id=p.episode_id,
        agents={a.agent: agent_result_from_proto(a) for a in p.agents},
        next_agent=p.next_agent,
        done=p.done,
        infra_failure=infra_failure_from_proto(p),
        step_index=p.step_index,
    )


def summary_to_proto(s: t.EpisodeSummary, out: types_pb2.EpisodeSummary) -> None:
    out.episode_id, out.env_id, out.steps = s.episode_id, s.env_id, s.steps
    out.terminated, out.truncated, out.close_reason = s.terminated, s.truncated, s.close_reason
    out.wall_seconds, out.env_seconds = s.wall_seconds, s.env_seconds
    if s.infra_failure is not None:
        out.infra_failure.source, out.infra_failure.message = s.infra_failure.source, s.infra_failure.message
    for agent in s.agents:
        proto_agent = out.agents.add(agent=agent.agent, episode_return=agent.episode_return)
        for c in agent.components:
            proto_agent.components.add(
                name=c.name, kind=c.kind.value, total=c.total, count=c.count, not_ok=c.not_ok
            )


def summary_from_proto(p: types_pb2.EpisodeSummary) -> t.EpisodeSummary:
    return t.EpisodeSummary(
        episode_id=p.episode_id,
        env_id=p.env_id,
        steps=p.steps,
        agents=[
            t.AgentSummary(
                agent=a.agent,
                episode_return=a.episode_return,
                components=[
                    t.ComponentTotal(c.name, t.RewardKind(c.kind or 1), c.total, c.count, c.not_ok)
                    for c in a.components
                ],
            )
            for a in p.agents
        ],
        infra_failure=t.InfraFailure(p.infra_failure.source, p.infra_failure.message)
        if p.HasField("infra_failure")
        else None,
        terminated=p.terminated,
        truncated=p.truncated,
        wall_seconds=p.wall_seconds,
        env_seconds=p.env_seconds,
        close_reason=p.close_reason,
    )


# ---------------------------------------------------------------- catalog


def spec_to_proto(spec: t.EnvSpec) -> catalog_pb2.EnvSpec:
    message = catalog_pb2.EnvSpec(
        id=spec.id,
        description=spec.description,
        plugin=spec.plugin,
        plugin_version=spec.plugin_version,
        kind=_enum(spec.kind),
        agents=list(spec.agents),
        tags=list(spec.tags),
        max_episode_steps=spec.max_episode_steps,
        num_tasks=spec.num_tasks,
        options_schema=json.dumps(spec.options_schema) if spec.options_schema is not None else "",
        sandbox_profiles=list(spec.sandbox_profiles),
        isolation=spec.isolation,
    )
    message.observation_space.CopyFrom(space_to_proto(spec.observation_space))
    message.action_space.CopyFrom(space_to_proto(spec.action_space))
    for rc in spec.reward_components:
        component = message.reward_components.add(
            name=rc.name, kind=rc.kind.value, description=rc.description
        )
        if rc.low is not None:
            component.low = rc.low
        if rc.high is not None:
            component.high = rc.high
    return message


def spec_from_proto(p: catalog_pb2.EnvSpec) -> t.EnvSpec:
    return t.EnvSpec(
        id=p.id,
        description=p.description,
        observation_space=space_from_proto(p.observation_space),
        action_space=space_from_proto(p.action_space),
        kind=t.EnvKind(p.kind or 1),
        agents=tuple(p.agents),
        reward_components=tuple(
            t.RewardComponentSpec(
                rc.name,
                t.RewardKind(rc.kind or 1),
                rc.description,
                low=rc.low if rc.HasField("low") else None,
                high=rc.high if rc.HasField("high") else None,
            )
            for rc in p.reward_components
        ),
        tags=tuple(p.tags),
        max_episode_steps=p.max_episode_steps,
        num_tasks=p.num_tasks,
        plugin=p.plugin,
        plugin_version=p.plugin_version,
        options_schema=json.loads(p.options_schema) if p.options_schema else None,
        sandbox_profiles=tuple(p.sandbox_profiles),
        isolation=p.isolation,
    )
