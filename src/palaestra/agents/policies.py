"""Policies that need no model: random play and the plugins' scripted reference agents.

`palaestra run` uses them to show an environment working end to end. A policy is made per episode
(`make_policy(spec, seed, kind, plugins)`) and called with the latest `EpisodeStep`; it returns the
actions to send. Plugins offer scripted agents through the `palaestra_scripted_policy` hook and text
drawings of tensor observations through `palaestra_render_text` (see palaestra.hookspecs); `plugins` is
the client-side plugin manager (`palaestra.pluginmanager.client_plugins()`).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from palaestra import types as t
from palaestra.hookspecs import ScriptedPolicy as Policy
from palaestra.pluginmanager import Plugins


class NoScriptedPolicy(LookupError):
    """`kind="scripted"` was asked for an environment no installed plugin has a scripted agent for."""


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


def scripted_policy(plugins: Plugins, spec: t.EnvSpec, seed: int | None = None) -> Policy | None:
    """The first scripted agent a plugin offers for this environment, or None."""
    policy: Policy | None = plugins.hook.palaestra_scripted_policy(spec=spec, seed=seed)
    return policy


def renderer(plugins: Plugins, spec: t.EnvSpec) -> Callable[[t.Observation], str | None]:
    """Draws a tensor observation as text through the plugins' `palaestra_render_text` (None: no drawing)."""

    def render(observation: t.Observation) -> str | None:
        text: str | None = plugins.hook.palaestra_render_text(spec=spec, observation=observation)
        return text

    return render


def make_policy(spec: t.EnvSpec, seed: int | None, kind: str, plugins: Plugins) -> tuple[str, Policy]:
    """('scripted' | 'random', policy): the scripted agent where one exists (unless kind='random')."""
    if kind in ("auto", "scripted"):
        policy = scripted_policy(plugins, spec, seed)
        if policy is not None:
            return "scripted", policy
        if kind == "scripted":
            loaded = ", ".join(sorted(plugins.loaded)) or "none"
            raise NoScriptedPolicy(
                f"no installed plugin offers a scripted agent for {spec.id} (plugins asked: {loaded}); "
                "use --policy random, or implement palaestra_scripted_policy in the plugin"
            )
    return "random", random_policy(spec, seed)
