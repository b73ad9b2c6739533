"""The reasoning-gym plugin: every reasoning-gym dataset as `rg/<dataset>` (e.g. `rg/leg_counting`),
resolved on first use. Needs the `[reasoning-gym]` extra; without it the plugin is unavailable.

One episode is one item: the first observation is reasoning-gym's default system prompt and the question;
the agent replies once with its answer inside `<answer>...</answer>`. Rewards: `correct` (OUTCOME, the
dataset's own `score_answer`, in [0, 1]) and `format` (FORMAT: 0 when the reply holds exactly one
`<answer>` block, else -1). The dataset's configuration is the open options, validated against the fields
of its config dataclass (`seed` and `size` excepted: the episode's seed picks the item, so a seed always
gives the same item).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import random
import re
import threading
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

from palaestra.hookspecs import PluginUnavailable, ScriptedPolicy, hookimpl

if importlib.util.find_spec("reasoning_gym") is None:
    raise PluginUnavailable(
        "the reasoning-gym plugin needs reasoning-gym: pip install 'palaestra[reasoning-gym]'"
    )

from palaestra import (
    Action,
    AgentResult,
    ChatSpace,
    Env,
    EnvContext,
    EnvSpec,
    Message,
    Observation,
    RewardComponent,
    RewardComponentSpec,
    RewardKind,
    StepResult,
)
from palaestra.env import EnvFactory
from palaestra.registry import EnvRegistry
from palaestra.types import DEFAULT_AGENT, EpisodeStep

__all__ = ["PREFIX", "dataset_names", "family", "palaestra_register_environments"]

PREFIX = "rg/"
MAX_ANSWER_CHARS = 20_000  # a longer answer is not scored (0): some scorers parse it with sympy
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NOT_OPTIONS = ("seed", "size")

REWARD_COMPONENTS = (
    RewardComponentSpec(
        "correct", RewardKind.OUTCOME, "reasoning-gym's score_answer for the answer", low=0.0, high=1.0
    ),
    RewardComponentSpec(
        "format", RewardKind.FORMAT, "0 when the reply holds exactly one <answer> block, else -1", -1.0, 0.0
    ),
)


@cache
def _datasets() -> Mapping[str, Any]:
    """reasoning-gym's dataset registry, imported on first use: importing reasoning-gym takes about 1 s,
    which a server or CLI that never serves an `rg/` id should not pay at start-up."""
    from reasoning_gym.factory import DATASETS

    return DATASETS


def dataset_names() -> list[str]:
    """Every dataset the installed reasoning-gym registers."""
    return sorted(_datasets())


def family(name: str) -> str:
    """The dataset's family: its reasoning-gym package (arithmetic, games, logic, ...)."""
    return _datasets()[name][0].__module__.split(".")[1]


def _json_schema(hint: Any) -> dict[str, Any]:
    """A JSON Schema for one config field's type (unconstrained where JSON cannot express it)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string"}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [member.value for member in hint]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_json_schema(arg) for arg in args]}
    if hint is type(None):
        return {"type": "null"}
    if origin in (list, tuple) or hint is tuple or str(origin) == "collections.abc.Sequence":
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {
                "type": "array",
                "prefixItems": [_json_schema(arg) for arg in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        return {"type": "array", "items": _json_schema(args[0])} if args else {"type": "array"}
    return {}  # dates, nested option objects: checked by the config itself


@cache
def options_schema(name: str) -> dict[str, Any]:
    """The open options of `rg/<name>`: its config dataclass's fields, defaults in the descriptions."""
    config_class = _datasets()[name][1]
    hints = typing.get_type_hints(config_class)
    properties: dict[str, Any] = {}
    for field in dataclasses.fields(config_class):
        if field.name in _NOT_OPTIONS:
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        properties[field.name] = {
            **_json_schema(hints[field.name]),
            "description": f"{config_class.__name__}.{field.name} (default {default!r})",
        }
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _config_value(hint: Any, value: Any) -> Any:
    """An option (as JSON gives it) in the type the config field declares."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(arg for arg in args if arg is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if isinstance(value, list) and (origin is tuple or hint is tuple):
        items = args if args and args[-1] is not Ellipsis else (args[:1] * len(value) if args else ())
        return (
            tuple(_config_value(h, v) for h, v in zip(items, value, strict=False)) if items else tuple(value)
        )
    if isinstance(value, list) and origin is list and args:
        return [_config_value(args[0], item) for item in value]
    return value


def dataset_config(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The config keywords for `options` (as JSON gives them), checked by the dataset's own config
    (`validate`). Raises ValueError naming what was refused."""
    config_class = _datasets()[name][1]
    hints = typing.get_type_hints(config_class)
    config = {key: _config_value(hints[key], value) for key, value in options.items()}
    if name == "composite":
        from reasoning_gym.composite import DatasetSpec

        config["datasets"] = [DatasetSpec(**spec) for spec in config.get("datasets") or []]
    try:
        checked = config_class(**config, seed=0, size=1)
        if hasattr(checked, "validate"):
            checked.validate()
    except (AssertionError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"rg/{name}: the configuration {dict(options)} was refused: {exc}") from None
    return config


def build_item(name: str, config: Mapping[str, Any], seed: int) -> tuple[Any, dict[str, Any]]:
    """The dataset built with `config` (from `dataset_config`) and its item for `seed`. Some datasets
    take a second to build (they load their data), so recent ones are kept: a group of episodes on one
    seed builds it once."""
    key = (name, repr(sorted(config.items())), seed)
    found = _RECENT.get(key)
    if found is None:
        from reasoning_gym import create_dataset

        dataset = create_dataset(name, seed=seed, size=1, **config)
        found = (dataset, dataset[0])
        with _RECENT_LOCK:
            _RECENT[key] = found
            while len(_RECENT) > RECENT_ITEMS:
                _RECENT.pop(next(iter(_RECENT)))
    return found


RECENT_ITEMS = 256
_RECENT: dict[tuple[str, str, int], tuple[Any, dict[str, Any]]] = {}
_RECENT_LOCK = threading.Lock()


def read_answer(text: str) -> tuple[str | None, str]:
    """The answer inside the reply's `<answer>` block, and what is wrong with the reply's format ('')."""
    found = _ANSWER.findall(text)
    if not found:
        return None, "no <answer>...</answer> block"
    if len({a.strip() for a in found}) > 1:
        return found[-1].strip(), "several different <answer> blocks"
    return found[-1].strip(), ""


class ReasoningGymEnv(Env):
    """One item of a reasoning-gym dataset, answered in one reply."""

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = dict(options)
        self.config = dataset_config(name, options)  # refused options: INVALID_ARGUMENT at open
        self.dataset: Any = None
        self.item: dict[str, Any] = {}

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult:
        chosen = seed if seed is not None else random.SystemRandom().randrange(2**31)
        config = dataset_config(self.name, {**self.options, **options}) if options else self.config
        self.dataset, self.item = build_item(self.name, config, chosen)
        from reasoning_gym.utils import SYSTEM_PROMPTS

        prompt = [Message("system", SYSTEM_PROMPTS["default"]), Message("user", str(self.item["question"]))]
        return StepResult.single(AgentResult(observation=Observation(messages=prompt)))

    def step(self, actions: Mapping[str, Action]) -> StepResult:
        text = next(iter(actions.values())).as_text()
        answer, problem = read_answer(text)
        score, detail = self._score(answer)
        components = [
            RewardComponent("correct", RewardKind.OUTCOME, score, detail=detail),
            RewardComponent(
                "format", RewardKind.FORMAT, -1.0 if problem else 0.0, detail=problem or "well formed"
            ),
        ]
        info = {"source_dataset": self.name, "expected": self.item.get("answer")}
        return StepResult.single(AgentResult(components=components, terminated=True, info=info))

    def _score(self, answer: str | None) -> tuple[float, str]:
        if answer is None:
            return 0.0, "no answer"
        if len(answer) > MAX_ANSWER_CHARS:
            return 0.0, f"the answer is longer than {MAX_ANSWER_CHARS} characters"
        try:
            score = float(self.dataset.score_answer(answer, self.item))
        except Exception as exc:  # the scorer could not read the policy's answer: the policy's failure
            return 0.0, f"the dataset's scorer could not read the answer ({type(exc).__name__})"
        return min(max(score, 0.0), 1.0), "score_answer"


def resolve(env_id: str) -> tuple[EnvSpec, EnvFactory] | None:
    name = env_id.removeprefix(PREFIX)
    if name not in _datasets():
        return None
    spec = EnvSpec(
        id=env_id,
        description=f"reasoning-gym {name} ({family(name)}): one question, answered in <answer> tags",
        observation_space=ChatSpace(),
        action_space=ChatSpace(),
        reward_components=REWARD_COMPONENTS,
        tags=("reasoning-gym", family(name)),
        max_episode_steps=1,
        options_schema=options_schema(name),
    )

    def factory(context: EnvContext) -> ReasoningGymEnv:
        return ReasoningGymEnv(name, context.options)

    return spec, factory


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    for name in config.get("envs", ()):  # [plugins.reasoning_gym] envs = [...]: listed up front
        found = resolve(PREFIX + name)
        if found is None:
            raise ValueError(f"reasoning-gym has no dataset {name!r}")
        registry.add(*found)
    registry.add_resolver(PREFIX, resolve)


@hookimpl
def palaestra_scripted_policy(spec: EnvSpec, seed: int | None) -> ScriptedPolicy | None:
    """Answers with the dataset's own answer for the seed's item (default configuration), where the
    dataset gives one: warm-up examples and an end-to-end check."""
    name = spec.id.removeprefix(PREFIX)
    if not spec.id.startswith(PREFIX) or name not in _datasets() or seed is None:
        return None

    def act(step: EpisodeStep) -> dict[str, Action]:
        _, item = build_item(name, dataset_config(name, {}), seed)
        return {DEFAULT_AGENT: Action(text=f"<answer>{item.get('answer')}</answer>")}

    return act
