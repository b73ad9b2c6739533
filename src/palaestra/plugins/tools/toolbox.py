"""Tools declared with OpenAI function schemas, and the checks every tool call goes through.

A call is parsed (arguments must be a JSON object), looked up (unknown tools are refused) and validated
with jsonschema before the tool function runs. Whatever goes wrong comes back to the agent as a tool
message it can react to; `CallOutcome.error_kind` tells the environment which penalty (if any) applies.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from palaestra.types import load_json_arguments

# error kinds that are the agent's fault and cost a penalty
INVALID_CALL_KINDS = ("unknown_tool", "bad_arguments")
POLICY_KIND = "policy"
TOOL_ERROR_KIND = "tool_error"


class ToolError(Exception):
    """The tool ran but refused (unknown order, no seats left): the agent sees the message, no penalty."""


class PolicyViolation(ToolError):
    """The call breaks the domain policy: refused, the agent sees why, and it costs a penalty."""


ToolFunction = Callable[..., Any]  # fn(state, **arguments) -> JSON-able result, may be async


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON schema of the arguments object
    fn: ToolFunction | None = None  # None: the domain executes it (an MCP server)

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-call declaration that reaches the agent."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass
class CallOutcome:
    content: str  # what the tool message says
    arguments: dict[str, Any] | None = None
    error_kind: str = ""  # "" when the tool succeeded

    @property
    def ok(self) -> bool:
        return not self.error_kind


def error_outcome(kind: str, message: str, arguments: dict[str, Any] | None = None) -> CallOutcome:
    return CallOutcome(json.dumps({"error": message}), arguments, kind)


def to_content(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result, sort_keys=True, default=str)


class Toolbox:
    """The tools of an episode: validation and dispatch."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self.tools = {t.name: t for t in tools}
        self._validators = {
            t.name: jsonschema.Draft202012Validator(dict(t.parameters or {"type": "object"})) for t in tools
        }

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self.tools.values()]

    def check(self, name: str, arguments_json: str) -> CallOutcome | tuple[Tool, dict[str, Any]]:
        """The tool and parsed arguments, or the error outcome that refuses the call."""
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.tools))
            return error_outcome("unknown_tool", f"unknown tool {name!r}; available tools: {known}")
        try:  # bounded in size and nesting: hostile arguments are a bad call, never a RecursionError
            arguments = load_json_arguments(arguments_json)
        except ValueError as exc:
            return error_outcome("bad_arguments", f"{name}: {exc}")
        errors = sorted(self._validators[name].iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            where = "/".join(map(str, errors[0].path)) or "(root)"
            return error_outcome(
                "bad_arguments", f"invalid arguments for {name} at {where}: {errors[0].message}", arguments
            )
        return tool, arguments

    async def call(self, state: Any, name: str, arguments_json: str) -> CallOutcome:
        checked = self.check(name, arguments_json)
        if isinstance(checked, CallOutcome):
            return checked
        tool, arguments = checked
        assert tool.fn is not None, f"tool {name} has no function; its domain must execute it"
        try:
            result = tool.fn(state, **arguments)
            if isinstance(result, Awaitable):
                result = await result
        except PolicyViolation as exc:
            return error_outcome(POLICY_KIND, f"refused by policy: {exc}", arguments)
        except ToolError as exc:
            return error_outcome(TOOL_ERROR_KIND, str(exc), arguments)
        return CallOutcome(to_content(result), arguments)


def obj(properties: Mapping[str, Any], required: Sequence[str] | None = None) -> dict[str, Any]:
    """A strict JSON schema object (no extra properties), all properties required unless told."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties if required is None else required),
        "additionalProperties": False,
    }


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
