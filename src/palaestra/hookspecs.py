"""Hook specifications: the extension points of Palaestra.

A plugin is a module (or object) with functions named like these, decorated with
`palaestra.hookimpl`. It is found through the `palaestra.plugins` entry-point group, `--plugin MODULE`,
or the `[plugins] modules` config list. Built-in plugins are registered the same way.

Every hook is optional. A plugin only implements what it contributes. A function decorated with
`hookimpl` whose name is not one of these hooks is refused: the plugin is reported as failed.

Server side: the ``palaestra_register_*`` hooks and the lifecycle hooks. Client side (``palaestra run``,
``palaestra train`` and other tools, in the client's process): ``palaestra_scripted_policy``,
``palaestra_render_text`` and ``palaestra_cli_commands``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from palaestra.registry import EnvRegistry, RewardRegistry, SandboxBackendRegistry
    from palaestra.types import Action, EnvSpec, EpisodeStep, EpisodeSummary, Observation

hookspec = pluggy.HookspecMarker("palaestra")
hookimpl = pluggy.HookimplMarker("palaestra")

# A scripted agent: called with the latest step of its episode, returns the actions to send.
ScriptedPolicy = Callable[["EpisodeStep"], "Mapping[str, Action]"]


class PluginUnavailable(Exception):
    """Raise it (at import, or from a registration hook) when the plugin cannot serve on this install
    for a reason that is not a fault, e.g. an optional extra is not installed. The message says what to
    install. The plugin is listed as unavailable and serves nothing; strict plugins do not make it fatal."""


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
    """Called once per episode after it ends, for recording or metrics: when its id closes; when a reset
    ends an episode that took steps (``summary.episode_id`` is then ``<id>/<n>``, close reason "reset");
    and for the episodes of a vector, as each ends (a summary only: the trajectory is empty).

    ``trajectory`` lists the episode's steps as plain dicts (step, time, env_seconds, actions, and per
    agent: rewards, components, new messages, checklist items with evidence, legal actions, info).
    ``info`` says how it was opened: seed, options, task, owner (the stream or connection that opened
    it), principal (the authenticated caller), group (episodes of one open request share it: a GRPO
    group), opened_at (Unix time). An implementation may take only some of these arguments. Keep it
    fast: it runs on the server's event loop. Exceptions are logged and ignored.
    """


@hookspec
def palaestra_server_started(address: str, environments: list[str]) -> None:
    """Called when the server accepts connections."""


@hookspec
def palaestra_server_stopping() -> None:
    """Called when the server begins its graceful shutdown."""


# ---------------------------------------------------------------- client side


@hookspec(firstresult=True)
def palaestra_scripted_policy(spec: EnvSpec, seed: int | None) -> ScriptedPolicy | None:
    """A scripted (reference) agent for one episode of ``spec``, or None when this plugin has none for
    it. ``palaestra run`` uses the first one offered, else a random agent; ``palaestra train`` uses it for
    warm-up examples. Decide by ``spec.id`` (or ``spec.plugin``): every plugin is asked."""


@hookspec(firstresult=True)
def palaestra_render_text(spec: EnvSpec, observation: Observation) -> str | None:
    """A text drawing of a tensor observation (e.g. a game board) for ``palaestra run``, or None."""


@hookspec
def palaestra_cli_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add subcommands to ``palaestra``: ``parser = commands.add_parser(name, help=...)``, then
    ``parser.set_defaults(handler=fn)`` where ``fn(args: argparse.Namespace) -> int`` is the exit code.
    Runs whenever ``palaestra`` builds its parser, so import heavy modules inside the handler."""
