"""The code plugin: programming tasks graded by running tests in sandboxes.

Environments (for each language, `python` and `cpp`): `code/<lang>` (single turn), `code/<lang>-repair`
(resubmit after public-test feedback) and `code/<lang>-tools` (a `run_code` tool before one submission).
Configuration lives in `[plugins.code]`; see docs/code.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from palaestra.env import EnvContext
from palaestra.hookspecs import ScriptedPolicy, hookimpl
from palaestra.plugins.code.checks import forbidden_rules
from palaestra.plugins.code.datasets import load_dataset_tasks
from palaestra.plugins.code.env import CodeEnv, EpisodeSettings
from palaestra.plugins.code.grader import Grader, GraderSettings
from palaestra.plugins.code.languages import LANGUAGES, Language, get_language
from palaestra.plugins.code.loaders import load_file
from palaestra.plugins.code.tasks import CodeTask, builtin_tasks
from palaestra.plugins.hf_datasets import uses_datasets
from palaestra.registry import EnvRegistry
from palaestra.types import ChatSpace, EnvSpec, RewardComponentSpec, RewardKind

MODES: dict[str, dict[str, bool]] = {
    "": {"repair": False, "tools": False},
    "-repair": {"repair": True, "tools": False},
    "-tools": {"repair": False, "tools": True},
}
EPISODE_OPTION_NAMES = {f.name for f in fields(EpisodeSettings)} - {"repair", "tools"}

REWARD_SPECS = (
    RewardComponentSpec(
        "outcome.all_hidden_pass", RewardKind.OUTCOME, "1 when every hidden test passes", 0.0, 1.0
    ),
    RewardComponentSpec(
        "outcome.hidden_fraction", RewardKind.OUTCOME, "fraction of hidden tests passed", 0.0, 1.0
    ),
    RewardComponentSpec(
        "process.public_delta", RewardKind.PROCESS, "per turn: change in public pass fraction", -1.0, 1.0
    ),
    RewardComponentSpec(
        "process.gated", RewardKind.PROCESS, "gated accumulation of the per-turn credit", -1.0, 1.0
    ),
    RewardComponentSpec(
        "format.code_block", RewardKind.FORMAT, "0 with a code block, -1 when none was found", -1.0, 0.0
    ),
    RewardComponentSpec(
        "checklist", RewardKind.CHECKLIST, "weight of the checklist items passed (they sum to 1)", 0.0, 1.0
    ),
    RewardComponentSpec(
        "checklist_not_run", RewardKind.CHECKLIST, "items whose check could not run (never counted)", 0.0, 0.0
    ),
)


def _options_schema() -> dict[str, Any]:
    """The open options of a code environment: the episode settings and reward weights (docs/code.md)."""
    from palaestra.plugins.code.rewards import DEFAULT_CHECKLIST_WEIGHTS, RewardConfig

    def typed(default: Any, description: str, minimum: float | None = 0) -> dict[str, Any]:
        if isinstance(default, bool):
            return {"type": "boolean", "description": description}
        kind = "integer" if isinstance(default, int) else "number"
        schema: dict[str, Any] = {"type": kind, "description": description}
        if minimum is not None:
            schema["minimum"] = minimum
        return schema

    episode = EpisodeSettings()
    rewards = RewardConfig()
    weights = {
        f.name: typed(getattr(rewards, f.name), f"{f.name} (default {getattr(rewards, f.name)})")
        for f in fields(RewardConfig)
        if f.name != "checklist"
    }
    weights["checklist"] = {
        "type": "object",
        "properties": {name: typed(0.0, "item weight") for name in DEFAULT_CHECKLIST_WEIGHTS},
        "additionalProperties": False,
        "description": f"weights of the checklist items {sorted(DEFAULT_CHECKLIST_WEIGHTS)}",
    }
    settings = {
        name: typed(getattr(episode, name), f"{name} (default {getattr(episode, name)})")
        for name in sorted(EPISODE_OPTION_NAMES - {"extract"})
    }
    settings["max_submissions"].update(minimum=1, maximum=20)
    settings["max_tool_calls"]["maximum"] = 64
    settings["feedback_chars"]["maximum"] = settings["tool_output_chars"]["maximum"] = 100_000
    settings["tool_seconds"].update(exclusiveMinimum=0, maximum=60)
    del settings["tool_seconds"]["minimum"]
    settings["extract"] = {"enum": ["last", "first", "whole"], "description": "which code block is graded"}
    settings["rewards"] = {
        "type": "object",
        "properties": weights,
        "additionalProperties": False,
        "description": "reward weights (the [plugins.code.rewards] names)",
    }
    return {"type": "object", "properties": settings, "additionalProperties": False}


OPTIONS_SCHEMA = _options_schema()


def load_task_set(config: Mapping[str, Any]) -> list[CodeTask]:
    """Built-in tasks (unless `include_builtin = false`) plus `task_files = [{path, format}]`."""
    tasks = list(builtin_tasks()) if config.get("include_builtin", True) else []
    for entry in config.get("task_files", []):
        if isinstance(entry, str):
            entry = {"path": entry}
        if uses_datasets(entry):  # Parquet/CSV, folders, globs, column maps: through `datasets`
            tasks += load_dataset_tasks(entry)
        else:
            tasks += load_file(entry["path"], entry.get("format", "native"))
    return tasks


def episode_settings(
    mode: dict[str, bool], config: Mapping[str, Any], options: Mapping[str, Any]
) -> EpisodeSettings:
    chosen = {k: v for k, v in config.items() if k in EPISODE_OPTION_NAMES}
    unknown = set(options) - EPISODE_OPTION_NAMES - {"rewards"}
    if unknown:
        raise ValueError(
            f"unknown options {sorted(unknown)} for a code environment; known: {sorted(EPISODE_OPTION_NAMES)}"
        )
    chosen.update({k: v for k, v in options.items() if k in EPISODE_OPTION_NAMES})
    # Options arrive as a protobuf Struct, where every number is a float: restore the declared types.
    types = {f.name: f.type for f in fields(EpisodeSettings)}
    chosen = {
        k: int(v) if types[k] == "int" else (float(v) if types[k] == "float" else v)
        for k, v in chosen.items()
    }
    settings = EpisodeSettings(**{**mode, **chosen})
    if settings.extract not in ("last", "first", "whole"):
        raise ValueError("extract must be one of last, first, whole")
    return settings


def make_factory(
    tasks: list[CodeTask], language: Language, mode: dict[str, bool], config: Mapping[str, Any]
) -> Any:
    from palaestra.plugins.code.rewards import RewardConfig

    grader = Grader(language, GraderSettings(python=str(config.get("python", "python3"))))
    forbidden = forbidden_rules(language.name, config.get("forbidden"))

    def factory(ctx: EnvContext) -> CodeEnv:
        settings = episode_settings(mode, config, ctx.options)
        rewards = RewardConfig.from_config(config.get("rewards"), ctx.options.get("rewards"))
        return CodeEnv(ctx, tasks, language, grader, settings, rewards, forbidden)

    return factory


def register(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    all_tasks = load_task_set(config)
    overrides = config.get("languages", {})
    for name in LANGUAGES:
        language = get_language(name, overrides.get(name))
        tasks = [t for t in all_tasks if t.supports(name)]
        if not tasks:
            continue
        for suffix, mode in MODES.items():
            settings = episode_settings(mode, config, {})
            described = (
                "single submission" if not any(mode.values()) else ("repair" if mode["repair"] else "tools")
            )
            registry.add(
                EnvSpec(
                    id=f"code/{name}{suffix}",
                    description=f"{name} programming tasks graded by sandboxed tests ({described})",
                    observation_space=ChatSpace(),
                    action_space=ChatSpace(),
                    reward_components=REWARD_SPECS,
                    tags=("code", name, "sandbox", *(k for k, v in mode.items() if v)),
                    max_episode_steps=settings.max_steps,
                    num_tasks=len(tasks),
                    options_schema=OPTIONS_SCHEMA,
                    sandbox_profiles=(language.profile,),
                ),
                make_factory(tasks, language, mode, config),
            )


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    register(registry, config)


@hookimpl
def palaestra_scripted_policy(spec: EnvSpec, seed: int | None) -> ScriptedPolicy | None:
    """The reference agent of the code environments (client side: `palaestra run`, training warm-ups)."""
    if not spec.id.startswith("code/"):
        return None
    from palaestra.plugins.code.reference import make_scripted_policy

    return make_scripted_policy(spec.id, seed)
