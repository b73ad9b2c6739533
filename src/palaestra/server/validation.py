"""The server's side of the contract with environments and clients, checked on every call:

* actions against the declared action space (and the server's bounds on policy input) before the
  environment sees them: INVALID_ARGUMENT, saying what was expected;
* open and reset options against the JSON Schema the plugin declares (`EnvSpec.options_schema`):
  INVALID_ARGUMENT naming the option; integral numbers where the schema says "integer" become ints;
* every reset and step result against the declared reward components (`EnvSpec.reward_components`):
  a broken result is the environment's bug, which `check_result` names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jsonschema
import numpy as np

from palaestra import types as t
from palaestra.server.errors import invalid

# Bounds on policy input, whatever the environment declares (gRPC's message size bounds the rest).
MAX_TEXT_CHARS = 1_000_000  # text actions and message contents
MAX_TOOL_CALLS = 64  # tool calls in one assistant message
MAX_TOOL_NAME_CHARS = 256


def describe_space(space: t.Space) -> str:
    match space:
        case t.DiscreteSpace(n=n, start=start):
            return f"a discrete action in [{start}, {start + n - 1}]"
        case t.BoxSpace(shape=shape, dtype=dtype):
            return f"a tensor of shape {list(shape)} ({dtype})"
        case t.MultiDiscreteSpace(nvec=nvec):
            return f"an integer tensor of shape [{len(nvec)}] with entries below {list(nvec)}"
        case t.MultiBinarySpace(shape=shape):
            return f"a 0/1 tensor of shape {list(shape)}"
        case t.TextSpace(max_length=max_length):
            return "a text action" + (f" of at most {max_length} characters" if max_length else "")
        case _:
            return "a text action or an assistant message (with optional tool calls)"


def check_action(space: t.Space, action: t.Action) -> None:
    """Raise INVALID_ARGUMENT, saying what was expected, unless `action` lies in `space`.
    (The description is built only on failure: this runs on every step.)"""
    kind = action.kind
    if kind == "empty":
        raise invalid(f"the action is empty; expected {describe_space(space)}")
    match space:
        case t.DiscreteSpace(n=n, start=start):
            if kind != "discrete" or not start <= int(action.discrete or 0) < start + n:
                raise invalid(f"got {_show(action)}; expected {describe_space(space)}")
        case t.BoxSpace() | t.MultiDiscreteSpace() | t.MultiBinarySpace():
            _check_tensor(space, action)
        case t.TextSpace(max_length=max_length):
            if kind != "text":
                raise invalid(f"got {_show(action)}; expected {describe_space(space)}")
            length = len(action.text or "")
            if length > (max_length or MAX_TEXT_CHARS):
                limit = f"; expected {describe_space(space)}" if max_length else ""
                raise invalid(
                    f"the text action has {length} characters; the server accepts at most "
                    f"{max_length or MAX_TEXT_CHARS}{limit}"
                )
        case t.ChatSpace():
            if kind not in ("text", "message"):
                raise invalid(f"got {_show(action)}; expected {describe_space(space)}")
            _check_chat_bounds(action)


def _check_tensor(space: t.Space, action: t.Action) -> None:
    if action.tensor is None:
        raise invalid(f"got {_show(action)}; expected {describe_space(space)}")
    tensor = action.tensor
    if isinstance(space, t.BoxSpace):
        shape = tuple(space.shape)
    elif isinstance(space, t.MultiDiscreteSpace):
        shape = (len(space.nvec),)
    else:
        shape = tuple(space.shape)  # type: ignore[union-attr]
    if tuple(tensor.shape) != shape:
        raise invalid(f"got a tensor of shape {list(tensor.shape)}; expected {describe_space(space)}")
    if isinstance(space, t.BoxSpace):
        _check_box(space, tensor)
    if isinstance(space, t.MultiDiscreteSpace) and (
        np.any(tensor < 0) or np.any(tensor >= np.asarray(space.nvec))
    ):
        raise invalid(f"tensor entries out of range; expected {describe_space(space)}")
    if isinstance(space, t.MultiBinarySpace) and not np.all((tensor == 0) | (tensor == 1)):
        raise invalid(f"tensor entries must be 0 or 1; expected {describe_space(space)}")


def _check_box(space: t.BoxSpace, tensor: np.ndarray) -> None:
    """As Gymnasium's Box.contains: the dtype casts safely to the space's, and low <= x <= high."""
    if not np.can_cast(tensor.dtype, np.dtype(space.dtype)):
        raise invalid(f"got a {tensor.dtype} tensor; expected {describe_space(space)}")
    if not np.all(np.isfinite(tensor)):
        raise invalid(f"the tensor holds NaN or infinite values; expected {describe_space(space)}")
    for bound, outside, word in ((space.low, np.less, "below low"), (space.high, np.greater, "above high")):
        if not bound:
            continue
        limits = np.asarray(bound, dtype=np.float64)
        if limits.size == tensor.size:
            limits = limits.reshape(tensor.shape)
        if np.any(outside(tensor, limits)):
            raise invalid(f"tensor entries {word} {list(bound)}; expected {describe_space(space)}")


def _show(action: t.Action) -> str:
    if action.kind == "discrete":
        return f"the discrete action {action.discrete}"
    if action.kind == "tensor" and action.tensor is not None:
        return f"a tensor of shape {list(action.tensor.shape)}"
    return f"a {action.kind} action"


def _check_chat_bounds(action: t.Action) -> None:
    if action.text is not None:
        if len(action.text) > MAX_TEXT_CHARS:
            raise invalid(f"the text action has {len(action.text)} characters; at most {MAX_TEXT_CHARS}")
        return
    message = action.message
    assert message is not None
    if message.role not in ("assistant", ""):
        raise invalid(f"an action message must have role 'assistant', got {message.role!r}")
    if len(message.content) > MAX_TEXT_CHARS:
        raise invalid(f"the message content has {len(message.content)} characters; at most {MAX_TEXT_CHARS}")
    if len(message.tool_calls) > MAX_TOOL_CALLS:
        raise invalid(f"the message has {len(message.tool_calls)} tool calls; at most {MAX_TOOL_CALLS}")
    for call in message.tool_calls:
        if len(call.name) > MAX_TOOL_NAME_CHARS:
            raise invalid(f"a tool name has {len(call.name)} characters; at most {MAX_TOOL_NAME_CHARS}")
        if len(call.arguments) > t.MAX_ARGUMENT_CHARS:
            raise invalid(
                f"the arguments of tool call {call.name[:40]!r} have {len(call.arguments)} characters; "
                f"at most {t.MAX_ARGUMENT_CHARS}"
            )


# ---------------------------------------------------------------- seeds and options


def check_seed(seed: int | None) -> None:
    if seed is not None and seed < 0:
        raise invalid(f"seed must be a non-negative integer, got {seed}")


_VALIDATORS: dict[int, tuple[Mapping[str, Any], Any]] = {}


def check_options(spec: t.EnvSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a client gave, checked against the environment's declared schema, with integral
    numbers turned back into ints where the schema says "integer" (protobuf Structs carry every number
    as a float). Raises INVALID_ARGUMENT naming the offending option and what was expected."""
    _check_finite(options, "options")
    schema = spec.options_schema
    if schema is None:
        return dict(options)
    coerced = _coerce_integers(dict(options), schema)
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        validator = jsonschema.validators.validator_for(schema)(schema)
        _VALIDATORS[id(schema)] = cached = (schema, validator)
    error = jsonschema.exceptions.best_match(cached[1].iter_errors(coerced))
    if error is not None:
        raise invalid(f"{spec.id}: {_describe_option_error(error)}")
    return coerced


def _check_finite(value: Any, where: str, depth: int = 0) -> None:
    if depth > 32:
        raise invalid(f"{where} is nested more than 32 levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(f"{where} is {value}; expected a finite number")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"option {key!r}" if where == "options" else f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}[{index}]", depth + 1)


def _coerce_integers(value: Any, schema: Any) -> Any:
    if not isinstance(schema, Mapping):
        return value
    types = schema.get("type")
    wants_int = types == "integer" or (
        isinstance(types, list) and "integer" in types and "number" not in types
    )
    if wants_int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {k: _coerce_integers(v, properties.get(k, extra)) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_coerce_integers(v, schema["items"]) for v in value]
    return value


def _describe_option_error(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    where = f"option {path!r}" if path else "options"
    expected = error.schema.get("description") if isinstance(error.schema, Mapping) else None
    known = ""
    if error.validator == "additionalProperties" and isinstance(error.schema, Mapping):
        names = sorted(error.schema.get("properties", {}))
        known = f"; known options: {', '.join(names)}" if names else "; this environment takes no options"
    hint = f" (expected: {expected})" if expected and path else ""
    return f"{where}: {error.message}{hint}{known}"


# ---------------------------------------------------------------- results


class _RewardContract:
    def __init__(self, spec: t.EnvSpec) -> None:
        self.spec = spec
        self.exact = {c.name: c for c in spec.reward_components if not c.name.endswith("*")}
        self.families = [(c.name[:-1], c) for c in spec.reward_components if c.name.endswith("*")]
        self.declared = ", ".join(c.name for c in spec.reward_components) or "none"

    def find(self, name: str) -> t.RewardComponentSpec | None:
        found = self.exact.get(name)
        if found is None:
            for prefix, family in self.families:
                if name.startswith(prefix):
                    return family
        return found


_CONTRACTS: dict[int, _RewardContract] = {}
_NEVER_POSITIVE = (t.RewardKind.FORMAT, t.RewardKind.PENALTY)


def check_result(spec: t.EnvSpec, result: t.StepResult) -> str | None:
    """Why `result` breaks the environment's reward contract, or None when it keeps it: every reward
    finite, every component declared with its kind and within its range, FORMAT and PENALTY components
    never positive, checklist weights and scores finite."""
    for agent, agent_result in result.agents.items():
        reward = agent_result.reward
        if reward is not None and not math.isfinite(reward):
            return f"agent {agent!r}: the reward is {reward}"
        if agent_result.components:
            why = _check_components(spec, agent_result.components)
            if why:
                return f"agent {agent!r}: {why}"
            # The scalar reward rule (palaestra.env): with components, the reward IS their weighted sum.
            total = t.total_reward(agent_result.components)
            if reward is not None and not math.isclose(reward, total, rel_tol=1e-9, abs_tol=1e-12):
                return (
                    f"agent {agent!r}: reward {reward} differs from the weighted sum of its components "
                    f"({total}); leave reward unset when returning components"
                )
        for item in agent_result.checklist:
            score = item.score if item.score is not None else 0.0
            if not (math.isfinite(item.weight) and math.isfinite(score)):
                weights = f"weight {item.weight}, score {score}"
                return f"agent {agent!r}: checklist item {item.item_id!r} has {weights}"
    return None


def _check_components(spec: t.EnvSpec, components: list[t.RewardComponent]) -> str | None:
    contract = _CONTRACTS.get(id(spec))
    if contract is None or contract.spec is not spec:
        _CONTRACTS[id(spec)] = contract = _RewardContract(spec)
    for c in components:
        declared = contract.find(c.name)
        if declared is None:
            return f"component {c.name!r} is not declared (declared: {contract.declared})"
        if declared.kind is not c.kind:
            return f"component {c.name!r} has kind {c.kind.name}; declared {declared.kind.name}"
        if not (math.isfinite(c.value) and math.isfinite(c.weight)):
            return f"component {c.name!r} has value {c.value} and weight {c.weight}; both must be finite"
        if c.status is not t.ComponentStatus.OK:
            continue
        if (declared.low is not None and c.value < declared.low) or (
            declared.high is not None and c.value > declared.high
        ):
            return f"component {c.name!r} = {c.value} lies outside its declared range {_range(declared)}"
        if c.kind in _NEVER_POSITIVE and c.value > 0:
            return (
                f"{c.kind.name} component {c.name!r} = {c.value} is positive; {c.kind.name} is 0 or a penalty"
            )
    return None


def _range(declared: t.RewardComponentSpec) -> str:
    low = "-inf" if declared.low is None else f"{declared.low:g}"
    high = "inf" if declared.high is None else f"{declared.high:g}"
    return f"[{low}, {high}]"
