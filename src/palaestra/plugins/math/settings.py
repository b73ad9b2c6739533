"""Settings of a math episode, merged from the environment's defaults, the plugin's config table,
the client's open options and reset options (later ones win), and validated in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from palaestra.plugins.math.checker import VerifyOptions
from palaestra.plugins.math.extract import STRATEGIES, check_strategies
from palaestra.plugins.math.prm import AGGREGATES
from palaestra.plugins.math.tasks import (
    MAX_DIFFICULTY,
    MIN_DIFFICULTY,
    SPLITS,
    check_split,
    clamp_difficulty,
)

MAX_TOOL_CALLS_LIMIT = 16
PROMPTS = ("full", "terse")
DEFAULT_WEIGHTS = {"outcome": 1.0, "format": 0.1, "process": 0.1, "prm": 0.1}


@dataclass(frozen=True)
class MathSettings:
    extract: tuple[str, ...] = ("boxed", "answer_is", "last_number")  # the first is the required format
    percent: str = "either"
    multiple_answers: str = "reject"  # several different boxed answers: "reject" (outcome 0) or "last"
    max_answer_chars: int = 1000
    max_response_chars: int = 100_000  # longer replies are not read: a format failure, outcome 0
    difficulty: int = 1
    split: str = "train"
    prompt: str = "full"  # "full": the answer format, then the problem; "terse": the bare expression
    tools: bool = False
    max_tool_calls: int = 4
    tool_timeout_s: float = 10.0
    tool_output_chars: int = 4000
    python_argv: tuple[str, ...] = ("python3",)
    verify_deadline_s: float = 5.0
    step_checker: bool = True
    prm: str = ""
    prm_aggregate: str = "min"
    prm_timeout_s: float = 30.0
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def verify_options(self) -> VerifyOptions:
        return VerifyOptions(percent=self.percent)  # type: ignore[arg-type]

    def weight(self, component: str) -> float:
        return float(self.weights.get(component, DEFAULT_WEIGHTS[component]))


_KNOWN = {f.name for f in fields(MathSettings)}
# Keys of the plugin config table that configure the plugin, not an episode.
_PLUGIN_KEYS = {"datasets", "verify_workers"}
# Settings only the operator may choose (in the plugin config table), never a client: which command the
# sandbox runs is the server's business.
_OPERATOR_KEYS = {"python_argv"}


def _coerce(name: str, value: Any) -> Any:
    if name in ("extract", "python_argv"):
        items = [value] if isinstance(value, str) else list(value)
        return check_strategies(items) if name == "extract" else tuple(str(v) for v in items)
    if name == "difficulty":
        return clamp_difficulty(value)
    if name == "weights":
        unknown = set(value) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown reward weights {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        return {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in value.items()}}
    if name in ("tools", "step_checker"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    default = getattr(MathSettings, name)
    return type(default)(value)


def _validate(settings: MathSettings) -> MathSettings:
    VerifyOptions(percent=settings.percent)  # type: ignore[arg-type]
    if settings.prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {PROMPTS}")
    if settings.multiple_answers not in ("reject", "last"):
        raise ValueError("multiple_answers must be 'reject' or 'last'")
    if settings.prm_aggregate not in AGGREGATES:
        raise ValueError(f"prm_aggregate must be one of {AGGREGATES}")
    if not 0 <= settings.max_tool_calls <= MAX_TOOL_CALLS_LIMIT:
        raise ValueError(f"max_tool_calls must be from 0 to {MAX_TOOL_CALLS_LIMIT}")
    if settings.verify_deadline_s <= 0 or settings.tool_timeout_s <= 0 or settings.prm_timeout_s <= 0:
        raise ValueError("deadlines must be positive")
    if settings.max_answer_chars <= 0:
        raise ValueError("max_answer_chars must be positive")
    check_split(settings.split)
    return settings


def merge(
    base: MathSettings, *layers: Mapping[str, Any], strict: bool = True, operator: bool = False
) -> MathSettings:
    """Apply option layers in order. Unknown keys are refused when `strict` (client options) and
    skipped otherwise (the plugin config table also holds plugin-wide keys). Operator-only settings are
    refused unless the layers are the operator's (`operator`: the plugin config table, dataset entries)."""
    changes: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            if name in _OPERATOR_KEYS and not operator:
                raise ValueError(f"math option {name!r} is the server's ([plugins.math]), not a client's")
            if name not in _KNOWN:
                if strict and name not in _PLUGIN_KEYS and name != "task":
                    raise ValueError(f"unknown math option {name!r}; known: {', '.join(sorted(_KNOWN))}")
                continue
            try:
                changes[name] = _coerce(name, value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"bad value for math option {name!r}: {exc}") from exc
    return _validate(replace(base, **changes))


def _number(description: str, maximum: float) -> dict[str, Any]:
    return {"type": "number", "exclusiveMinimum": 0, "maximum": maximum, "description": description}


def _integer(description: str, minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, "description": description}


def _strings(description: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "string", **({"enum": list(allowed)} if allowed else {})}
    return {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}], "description": description}


# The open (and reset) options of every math environment; the names are the MathSettings fields.
OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task": {"type": ["integer", "string"], "description": "a task index or id"},
        "extract": _strings("answer extraction strategies, the first is the required format", STRATEGIES),
        "percent": {"enum": ["value", "number", "either"], "description": "how 50% reads"},
        "multiple_answers": {"enum": ["reject", "last"], "description": "several different boxed answers"},
        "max_answer_chars": _integer("longest answer compared", 1, 100_000),
        "max_response_chars": _integer("longest reply read", 1, 1_000_000),
        "difficulty": _integer("generated task difficulty", MIN_DIFFICULTY, MAX_DIFFICULTY),
        "split": {"enum": list(SPLITS), "description": "generated tasks: disjoint sets of problems"},
        "prompt": {"enum": list(PROMPTS), "description": "the prompt style"},
        "tools": {"type": "boolean", "description": "offer the python tool"},
        "max_tool_calls": _integer("python tool calls allowed", 0, MAX_TOOL_CALLS_LIMIT),
        "tool_timeout_s": _number("seconds per tool call", 120),
        "tool_output_chars": _integer("characters of tool output shown", 0, 100_000),
        "verify_deadline_s": _number("seconds for reading and verifying the answer", 120),
        "step_checker": {"type": "boolean", "description": "run the arithmetic step checker"},
        "prm": {"type": "string", "description": "a registered process reward model, or empty"},
        "prm_aggregate": {"enum": list(AGGREGATES), "description": "how step scores combine"},
        "prm_timeout_s": _number("seconds for the PRM", 600),
        "weights": {
            "type": "object",
            "properties": {name: {"type": "number"} for name in DEFAULT_WEIGHTS},
            "additionalProperties": False,
            "description": f"component weights, of {sorted(DEFAULT_WEIGHTS)}",
        },
    },
    "additionalProperties": False,
}
