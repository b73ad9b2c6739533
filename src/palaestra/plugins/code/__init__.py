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
from palaestra.hookspecs import hookimpl
from palaestra.plugins.code.checks import forbidden_rules
from palaestra.plugins.code.env import CodeEnv, EpisodeSettings
from palaestra.plugins.code.grader import Grader, GraderSettings
from palaestra.plugins.code.languages import LANGUAGES, Language, get_language
from palaestra.plugins.code.loaders import load_file
from palaestra.plugins.code.tasks import CodeTask, builtin_tasks
from palaestra.registry import EnvRegistry
from palaestra.types import ChatSpace, EnvSpec, RewardComponentSpec, RewardKind

MODES: dict[str, dict[str, bool]] = {
    "": {"repair": False, "tools": False},
    "-repair": {"repair": True, "tools": False},
    "-tools": {"repair": False, "tools": True},
}
EPISODE_OPTION_NAMES = {f.name for f in fields(EpisodeSettings)} - {"repair", "tools"}

REWARD_SPECS = (
    RewardComponentSpec("outcome.all_hidden_pass", RewardKind.OUTCOME, "1 when every hidden test passes"),
    RewardComponentSpec("outcome.hidden_fraction", RewardKind.OUTCOME, "fraction of hidden tests passed"),
    RewardComponentSpec(
        "process.public_delta", RewardKind.PROCESS, "per turn: change in public pass fraction"
    ),
    RewardComponentSpec("process.gated", RewardKind.PROCESS, "gated accumulation of the per-turn credit"),
    RewardComponentSpec("format.code_block", RewardKind.FORMAT, "-1 when no code block was found"),
    RewardComponentSpec("checklist.*", RewardKind.CHECKLIST, "one per checklist item, with its reason"),
)


def load_task_set(config: Mapping[str, Any]) -> list[CodeTask]:
    """Built-in tasks (unless `include_builtin = false`) plus `task_files = [{path, format}]`."""
    tasks = list(builtin_tasks()) if config.get("include_builtin", True) else []
    for entry in config.get("task_files", []):
        if isinstance(entry, str):
            entry = {"path": entry}
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
                ),
                make_factory(tasks, language, mode, config),
            )


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    register(registry, config)
