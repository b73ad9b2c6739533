"""Policies that need no model: random play and the plugins' scripted reference agents.

`palaestra run` uses them to show an environment working end to end. A policy is made per episode
(`make_policy(spec, seed)`) and called with the latest `EpisodeStep`; it returns the actions to send.
Plugins offer a scripted agent by exposing `make_scripted_policy(env_id, seed)` in their module (or, for the
built-in plugins, in the module named in SCRIPTED_AGENTS); it may return None for ids it has no agent for.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from palaestra import types as t

Policy = Callable[[t.EpisodeStep], Mapping[str, t.Action]]

# Environment id prefix -> module offering make_scripted_policy(env_id, seed) -> Policy | None.
SCRIPTED_AGENTS = {
    "echo/": "palaestra.plugins.echo",
    "code/": "palaestra.plugins.code.reference",
    "math/": "palaestra.plugins.math.reference",
    "games/": "palaestra.plugins.games.reference",
    "tools/": "palaestra.plugins.tools.reference",
}


def random_action(space: t.Space, result: t.AgentResult, rng: random.Random) -> t.Action:
    obs = result.observation
    if isinstance(space, t.DiscreteSpace):
        if obs.action_mask is not None and obs.action_mask.any():
            return t.Action(discrete=space.start + int(rng.choice(list(np.flatnonzero(obs.action_mask)))))
        return t.Action(discrete=space.start + rng.randrange(space.n))
    if isinstance(space, t.BoxSpace):
        low = (
            np.asarray(space.low, dtype=np.float64).reshape(space.shape)
            if space.low
            else -np.ones(space.shape)
        )
        high = (
            np.asarray(space.high, dtype=np.float64).reshape(space.shape)
            if space.high
            else np.ones(space.shape)
        )
        sample = low + (high - low) * np.asarray([rng.random() for _ in range(low.size)]).reshape(space.shape)
        return t.Action(tensor=sample.astype(space.dtype))
    if isinstance(space, t.MultiDiscreteSpace):
        return t.Action(tensor=np.asarray([rng.randrange(n) for n in space.nvec], dtype=np.int64))
    if isinstance(space, t.MultiBinarySpace):
        return t.Action(
            tensor=np.asarray([rng.randrange(2) for _ in range(int(np.prod(space.shape)))]).reshape(
                space.shape
            )
        )
    if obs.legal_actions:
        return t.Action(text=rng.choice(obs.legal_actions))
    return t.Action(text="I do not know.")


def random_policy(spec: t.EnvSpec, seed: int | None = None) -> Policy:
    rng = random.Random(seed)

    def act(step: t.EpisodeStep) -> dict[str, t.Action]:
        if spec.kind is t.EnvKind.SIMULTANEOUS:
            agents = list(spec.agents)
        else:
            agents = [step.next_agent or next(iter(step.agents), spec.agents[0])]
        return {
            agent: random_action(spec.action_space, step.agents.get(agent, t.AgentResult()), rng)
            for agent in agents
        }

    return act


def _plugin_helper(spec: t.EnvSpec, attribute: str) -> Any:
    """`attribute` from the module that offers helpers for this environment's plugin, if any."""
    module_names = [name for prefix, name in SCRIPTED_AGENTS.items() if spec.id.startswith(prefix)]
    module_names += [ep.value for ep in entry_points(group="palaestra.plugins") if ep.name == spec.plugin]
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, attribute):
            return getattr(module, attribute)
    return None


def scripted_policy(spec: t.EnvSpec, seed: int | None = None) -> Policy | None:
    """The plugin's scripted agent, or None (it may also decline environments it cannot play)."""
    make = _plugin_helper(spec, "make_scripted_policy")
    return make(spec.id, seed) if make is not None else None  # type: ignore[no-any-return]


def renderer(spec: t.EnvSpec) -> Callable[[t.Observation], str] | None:
    """The plugin's `render_text(observation)`, for showing tensor observations (e.g. game boards)."""
    return _plugin_helper(spec, "render_text")  # type: ignore[no-any-return]


def make_policy(spec: t.EnvSpec, seed: int | None = None, kind: str = "auto") -> tuple[str, Policy]:
    """('scripted' | 'random', policy): the scripted agent where one exists (unless kind='random')."""
    if kind in ("auto", "scripted"):
        policy = scripted_policy(spec, seed)
        if policy is not None:
            return "scripted", policy
        if kind == "scripted":
            raise ValueError(f"no scripted agent for {spec.id}")
    return "random", random_policy(spec, seed)
