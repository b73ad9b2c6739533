"""A plugin whose registration raises after it registered an environment (loaded only by the tests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from palaestra import EnvSpec, TextSpace, hookimpl
from palaestra.hookspecs import ScriptedPolicy
from palaestra.registry import EnvRegistry, RewardRegistry

CALLS: list[str] = []


@hookimpl
def palaestra_register_reward_functions(registry: RewardRegistry, config: Mapping[str, Any]) -> None:
    registry.add("broken/judge", lambda text: 1.0)


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    spec = EnvSpec("broken/half-registered", "never served", TextSpace(), TextSpace())
    registry.add(spec, lambda context: None)  # type: ignore[arg-type,return-value]
    raise RuntimeError("the broken plugin's registration failed on purpose")


@hookimpl
def palaestra_scripted_policy(spec: EnvSpec, seed: int | None) -> ScriptedPolicy | None:
    CALLS.append(spec.id)
    return None
