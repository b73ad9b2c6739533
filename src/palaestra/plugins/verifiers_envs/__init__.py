"""The verifiers plugin: any installed verifiers environment (taskset module) as `vf/<name>`, resolved on
first use. Needs the `[verifiers]` extra (verifiers >= 0.4, whose `verifiers.v1` API it serves); without
it the plugin is unavailable.

`vf/<name>` loads the taskset `<name>` the way verifiers itself does (`verifiers.v1.utils.loaders`: the
module `verifiers.v1.tasksets.<name>`, else the importable module `<name>`, exporting one `Taskset`
subclass through `__all__`, and optionally an `Env` subclass). The client chooses the name, so a module
whose source never mentions verifiers is not imported (NOT_FOUND). What each part becomes:

* the taskset's tasks are the episodes' tasks: the seed picks one (index `seed % number of tasks`; the
  first 1000 of an infinite taskset), the task selector picks one by index, id or name; the task's system
  prompt and prompt are the first observation;
* the task's `@vf.reward` functions are reward components named like the functions, with their weights
  (the reward is their weighted sum, as in verifiers); rewards recorded any other way (an `Env`'s
  `run`/`finalize`, a function returning keyed scores) arrive as components `env.<name>`; `@vf.metric`
  values go to the step's info;
* the tools of the taskset's and task's `Toolset`s are Palaestra tools (OpenAI function schemas in the
  first observation, named `<server>_<tool>` as verifiers' harnesses name them); the policy's tool calls
  run in the server's process and their results come back as `tool` messages;
* a taskset exporting an `Env` subclass with one agent seat runs its own `run()`: each
  `interaction.turn(...)` is one more turn of the Palaestra episode (multi-turn), until `run()` ends or
  `max_turns` policy replies.

The policy is the Palaestra client: verifiers' harnesses (bash, a chat loop) and model clients are not
run. Not served (FAILED_PRECONDITION saying so): environments with more than one agent seat, and tasks
that need a verifiers runtime (a container image or their own `setup`/`finalize`).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from typing import Any

from palaestra.hookspecs import PluginUnavailable, hookimpl

if importlib.util.find_spec("verifiers") is None:
    raise PluginUnavailable(
        "the verifiers plugin needs verifiers>=0.4: pip install 'palaestra[verifiers]' "
        "(its pins, e.g. mcp==2.0.0, may call for a venv of its own)"
    )

from palaestra.env import EnvFactory
from palaestra.registry import EnvRegistry
from palaestra.types import EnvSpec

__all__ = ["PREFIX", "palaestra_register_environments", "resolve"]

PREFIX = "vf/"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")  # a top-level module name (- for _), as verifiers ids


def resolve(env_id: str) -> tuple[EnvSpec, EnvFactory] | None:
    name = env_id.removeprefix(PREFIX)
    if not env_id.startswith(PREFIX) or not _NAME.fullmatch(name):
        return None
    from palaestra.plugins.verifiers_envs.episode import served_environment  # imports verifiers

    return served_environment(env_id)


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    for name in config.get("envs", ()):  # [plugins.verifiers_envs] envs = [...]: listed up front
        found = resolve(PREFIX + name)
        if found is None:
            raise ValueError(f"no verifiers environment module {name!r}")
        registry.add(*found)
    registry.add_resolver(PREFIX, resolve)
