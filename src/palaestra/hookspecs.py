"""Hook specifications: the extension points of Palaestra.

A plugin is a module (or object) with functions named like these, decorated with
`palaestra.hookimpl`. It is found through the `palaestra.plugins` entry-point group, `--plugin MODULE`,
or the `[plugins] modules` config list. Built-in plugins are registered the same way.

Every hook is optional. A plugin only implements what it contributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from palaestra.registry import EnvRegistry, RewardRegistry, SandboxBackendRegistry
    from palaestra.types import EpisodeSummary

hookspec = pluggy.HookspecMarker("palaestra")
hookimpl = pluggy.HookimplMarker("palaestra")


@hookspec
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    """Add environments with ``registry.add(spec, factory)``.

    ``config`` is this plugin's ``[plugins.NAME]`` table from the server configuration (empty when
    absent). A duplicate environment id is refused with an error naming both plugins.
    """


@hookspec
def palaestra_register_reward_functions(registry: RewardRegistry, config: Mapping[str, Any]) -> None:
    """Add named reward functions (verifiers, judges, process reward models) with ``registry.add``.

    Environments find them in ``EnvContext.rewards`` by name, so one plugin can score another's episodes.
    """


@hookspec
def palaestra_register_sandbox_backends(registry: SandboxBackendRegistry) -> None:
    """Add sandbox backends with ``registry.add(name, factory)``; factory(config) -> SandboxBackend."""


@hookspec
def palaestra_episode_finished(
    summary: EpisodeSummary, trajectory: list[dict[str, Any]], info: dict[str, Any]
) -> None:
    """Called once per episode after it closes, for recording or metrics.

    ``trajectory`` lists the episode's steps as plain dicts (step, time, env_seconds, actions, and per
    agent: rewards, components, new messages, checklist items with evidence, legal actions, info).
    ``info`` says how it was opened: seed, options, task, owner (who opened it), group (episodes of one
    open request share it: a GRPO group), opened_at (Unix time). An implementation may take only some
    of these arguments. Keep it fast: it runs on the server's event loop. Exceptions are logged and ignored.
    """


@hookspec
def palaestra_server_started(address: str, environments: list[str]) -> None:
    """Called when the server accepts connections."""


@hookspec
def palaestra_server_stopping() -> None:
    """Called when the server begins its graceful shutdown."""
