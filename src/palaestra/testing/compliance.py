"""The compliance checks: what every environment must do, checked through a real server over gRPC.

Each check takes a connected `Client` and an environment id and raises `ComplianceError` (an
`AssertionError`) saying what the environment did wrong. Every check can fail because of the environment
alone: the server's own guarantees (its step cap, its action-space check) do not make a check pass.

* `check_open_and_close` - the first observation names the environment's agents; close returns a summary
  and a second close is NOT_FOUND.
* `check_seeds_reproduce` - two episodes with the same seed, played with the same actions, see the same
  observations and get the same rewards, step by step.
* `check_ends_by_itself` - under valid actions the episode ends (terminated or truncated) by the
  environment's own decision, not because the server cut it at `max_episode_steps`.
* `check_rewards_declared` - no step of a played episode breaks the reward contract (finite values, only
  declared components of their declared kinds and ranges; the server ends such an episode with an
  infrastructure failure that says so) and, checked again here, every component is declared.
* `check_malformed_actions` - actions of the wrong kind are refused with INVALID_ARGUMENT and the episode
  goes on; hostile actions the environment itself must handle (empty or long text, unknown tools,
  arguments that are not JSON or nest thousands of levels deep) are refused with INVALID_ARGUMENT or
  answered (a penalty, an error message), never an infrastructure failure.
* `check_close_idempotent` - in process: the environment's `close` may run twice, before or after reset.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import grpc
import numpy as np

from palaestra import types as t
from palaestra.agents.client import Client, PalaestraError
from palaestra.env import EnvContext
from palaestra.pluginmanager import Plugins
from palaestra.server.episodes import SERVER_TRUNCATION  # set when the server, not the env, ended it

STEP_CAP = 1000  # no compliant environment may need more valid steps than this to end by itself
REPRODUCE_STEPS = 6  # steps compared by check_seeds_reproduce
DEEP = 5000  # nesting of the hostile tool-call arguments


class ComplianceError(AssertionError):
    """An environment broke the environment contract; the message says how."""


# ---------------------------------------------------------------- actions


def valid_action(spec: t.EnvSpec, result: t.AgentResult) -> t.Action:
    """A simple action inside the declared space (the first legal move where the environment lists them)."""
    space = spec.action_space
    obs = result.observation
    if isinstance(space, t.DiscreteSpace):
        if obs.action_mask is not None and obs.action_mask.any():
            return t.Action(discrete=space.start + int(np.flatnonzero(obs.action_mask)[0]))
        return t.Action(discrete=space.start)
    if isinstance(space, t.BoxSpace):
        size = int(np.prod(space.shape))
        low = np.asarray(space.low or [0.0] * size, dtype=space.dtype).reshape(space.shape)
        high = np.asarray(space.high or [0.0] * size, dtype=space.dtype).reshape(space.shape)
        return t.Action(tensor=np.clip(np.zeros(space.shape, dtype=space.dtype), low, high))
    if isinstance(space, t.MultiDiscreteSpace):
        return t.Action(tensor=np.zeros((len(space.nvec),), dtype=np.int64))
    if isinstance(space, t.MultiBinarySpace):
        return t.Action(tensor=np.zeros(space.shape, dtype=np.int8))
    if obs.legal_actions:
        return t.Action(text=obs.legal_actions[0])
    return t.Action(text="I do not know.")


def acting(spec: t.EnvSpec, step: t.EpisodeStep, last: dict[str, t.AgentResult]) -> dict[str, t.Action]:
    """Valid actions for whoever acts next (every agent of a simultaneous environment)."""
    last.update(step.agents)
    if spec.kind is t.EnvKind.SIMULTANEOUS:
        return {agent: valid_action(spec, last.get(agent, t.AgentResult())) for agent in spec.agents}
    agent = step.next_agent or next(iter(step.agents), spec.agents[0])
    return {agent: valid_action(spec, last.get(agent, t.AgentResult()))}


def wrong_kind_action(spec: t.EnvSpec) -> t.Action:
    """An action of the wrong kind for the space: the server refuses it before the environment runs."""
    if isinstance(spec.action_space, (t.ChatSpace, t.TextSpace)):
        return t.Action(discrete=0)
    if isinstance(spec.action_space, t.DiscreteSpace):
        return t.Action(text="not a number")
    return t.Action(tensor=np.zeros((97, 3), dtype=np.float32))


def hostile_actions(spec: t.EnvSpec, first: t.AgentResult) -> dict[str, t.Action]:
    """Actions inside the declared space that the environment itself must cope with."""
    space = spec.action_space
    if isinstance(space, t.TextSpace):
        longest = space.max_length or 100_000
        return {"empty text": t.Action(text=""), "long text": t.Action(text="x" * longest)}
    if not isinstance(space, t.ChatSpace):
        return {}
    deep = '{"code": ' + "[" * DEEP + "]" * DEEP + "}"
    tools = [tool.get("function", tool).get("name", "") for tool in first.observation.tools]
    tool = next((name for name in tools if name), "no_such_tool")

    def call(name: str, arguments: str) -> t.Action:
        return t.Action(message=t.Message("assistant", "", tool_calls=[t.ToolCall(name, arguments, "c1")]))

    return {
        "empty text": t.Action(text=""),
        "long text": t.Action(text="\\boxed{" * 20_000),
        "unknown tool": call("no_such_tool", "{}"),
        "arguments that are not JSON": call(tool, '{"code": '),
        "arguments that are not an object": call(tool, "[1, 2]"),
        f"arguments nested {DEEP} deep": call(tool, deep),
    }


# ---------------------------------------------------------------- helpers


def _fail(env_id: str, what: str) -> ComplianceError:
    return ComplianceError(f"{env_id}: {what}")


def _healthy(env_id: str, step: t.EpisodeStep, doing: str) -> None:
    if step.infra_failure is not None:
        failure = step.infra_failure
        raise _fail(
            env_id, f"{doing} ended in an infrastructure failure ({failure.source}: {failure.message})"
        )


@contextmanager
def _closing(client: Client, episode_ids: list[str]) -> Iterator[None]:
    try:
        yield
    finally:
        if episode_ids:
            with suppress(PalaestraError):
                client.close(episode_ids)


def _fingerprint(step: t.EpisodeStep) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for agent, result in sorted(step.agents.items()):
        obs = result.observation
        tensor = obs.tensor.tobytes() if obs.tensor is not None else b""
        mask = obs.action_mask.tobytes() if obs.action_mask is not None else b""
        messages = [(m.role, m.content, [(c.name, c.arguments) for c in m.tool_calls]) for m in obs.messages]
        components = sorted((c.name, round(c.value, 9), c.status.name) for c in result.components)
        out.append(
            (
                agent,
                messages,
                tensor,
                mask,
                list(obs.legal_actions),
                round(result.scalar_reward, 9),
                components,
            )
        )
    out.append(("next", step.next_agent, step.done))
    return out


def _play(
    client: Client, spec: t.EnvSpec, seed: int, steps: int, on_step: Callable[[t.EpisodeStep], None]
) -> list[t.EpisodeStep]:
    """Open one episode, play valid actions for up to `steps` steps (or its end); every result goes to
    `on_step`. Returns the results, first observation included."""
    [step] = client.open(spec.id, seed=seed)
    seen = [step]
    with _closing(client, [step.episode_id]):
        on_step(step)
        last: dict[str, t.AgentResult] = {}
        for _ in range(steps):
            if step.done:
                break
            step = client.step(step.episode_id, acting(spec, step, last))
            seen.append(step)
            on_step(step)
    return seen


# ---------------------------------------------------------------- the checks


def check_open_and_close(client: Client, env_id: str, seed: int = 3) -> None:
    spec = client.describe(env_id)
    [first] = client.open(env_id, seed=seed)
    problem = ""
    if first.infra_failure is not None:
        problem = f"opening ended in an infrastructure failure ({first.infra_failure.message})"
    elif not first.agents:
        problem = "the first observation names no agent"
    elif not set(first.agents) <= set(spec.agents):
        problem = f"the first observation names agents {sorted(first.agents)}, not in {spec.agents}"
    [summary] = client.close(first.episode_id)
    if problem:
        raise _fail(env_id, problem)
    if summary.env_id != env_id or summary.close_reason != "client":
        raise _fail(env_id, f"closing returned the summary {summary}")
    try:
        client.close(first.episode_id)
    except PalaestraError as exc:
        if exc.code is not grpc.StatusCode.NOT_FOUND:
            raise _fail(
                env_id, f"a second close answered {exc.code.name}, not NOT_FOUND: {exc.message}"
            ) from None
    else:
        raise _fail(env_id, "a second close of the same episode was not refused")


def check_seeds_reproduce(client: Client, env_id: str, seeds: tuple[int, ...] = (11, 12)) -> None:
    spec = client.describe(env_id)
    for seed in seeds:
        runs = []
        for _ in range(2):
            steps = _play(client, spec, seed, REPRODUCE_STEPS, lambda step: _healthy(env_id, step, "playing"))
            runs.append([_fingerprint(step) for step in steps])
        for index, (a, b) in enumerate(zip(*runs, strict=False)):
            if a != b:
                where = "the first observation" if index == 0 else f"step {index}"
                raise _fail(
                    env_id,
                    f"two episodes with seed {seed} and the same actions differ at {where}: {a} != {b}",
                )
        if len(runs[0]) != len(runs[1]):
            raise _fail(
                env_id, f"two episodes with seed {seed} and the same actions ended after different steps"
            )


def check_ends_by_itself(client: Client, env_id: str, seed: int = 2) -> None:
    spec = client.describe(env_id)
    cap = STEP_CAP if not spec.max_episode_steps else min(spec.max_episode_steps, STEP_CAP)
    steps = _play(client, spec, seed, cap, lambda step: _healthy(env_id, step, "playing"))
    last = steps[-1]
    if not last.done:
        raise _fail(env_id, f"did not end within {cap} valid steps")
    if any(SERVER_TRUNCATION in result.info for result in last.agents.values()):
        raise _fail(
            env_id,
            f"did not end by itself: the server truncated it at its declared max_episode_steps "
            f"({spec.max_episode_steps}); an environment must terminate or truncate its own episodes",
        )
    try:
        client.step(last.episode_id, acting(spec, last, {}))
    except PalaestraError as exc:
        if exc.code is grpc.StatusCode.FAILED_PRECONDITION or exc.code is grpc.StatusCode.NOT_FOUND:
            return
        raise _fail(env_id, f"a step after the end answered {exc.code.name}: {exc.message}") from None


def check_rewards_declared(client: Client, env_id: str, seeds: tuple[int, ...] = (4, 5)) -> None:
    spec = client.describe(env_id)
    exact = {c.name: c for c in spec.reward_components if not c.name.endswith("*")}
    families = [(c.name[:-1], c) for c in spec.reward_components if c.name.endswith("*")]

    def declared(name: str) -> t.RewardComponentSpec | None:
        return exact.get(name) or next((c for prefix, c in families if name.startswith(prefix)), None)

    def inspect_step(step: t.EpisodeStep) -> None:
        _healthy(env_id, step, "playing")
        for agent, result in step.agents.items():
            if not math.isfinite(result.scalar_reward):
                raise _fail(env_id, f"agent {agent!r} got the reward {result.scalar_reward}")
            for c in result.components:
                found = declared(c.name)
                if found is None or found.kind is not c.kind:
                    raise _fail(env_id, f"component {c.name!r} ({c.kind.name}) is not declared in the spec")
                if not math.isfinite(c.value):
                    raise _fail(env_id, f"component {c.name!r} is {c.value}")

    for seed in seeds:
        _play(client, spec, seed, STEP_CAP, inspect_step)


def check_malformed_actions(client: Client, env_id: str, seed: int = 5) -> None:
    spec = client.describe(env_id)
    [first] = client.open(env_id, seed=seed)
    with _closing(client, [first.episode_id]):
        _healthy(env_id, first, "opening")
        agent = first.next_agent or next(iter(first.agents))
        try:
            client.step(first.episode_id, {agent: wrong_kind_action(spec)})
        except PalaestraError as exc:
            if exc.code is not grpc.StatusCode.INVALID_ARGUMENT:
                raise _fail(
                    env_id, f"an action of the wrong kind answered {exc.code.name}: {exc.message}"
                ) from None
        else:
            raise _fail(env_id, "an action of the wrong kind was accepted")
        step = client.step(first.episode_id, acting(spec, first, {}))
        _healthy(env_id, step, "a valid step after a refused one")
    for what, action in hostile_actions(spec, first.agents[agent]).items():
        [episode] = client.open(env_id, seed=seed)
        with _closing(client, [episode.episode_id]):
            actor = episode.next_agent or next(iter(episode.agents))
            try:
                step = client.step(episode.episode_id, {actor: action})
            except PalaestraError as exc:
                if exc.code is not grpc.StatusCode.INVALID_ARGUMENT:
                    raise _fail(env_id, f"{what} answered {exc.code.name}: {exc.message}") from None
                step = client.step(episode.episode_id, acting(spec, episode, {}))
                _healthy(env_id, step, f"a valid step after {what} was refused")
                continue
            _healthy(env_id, step, what)


def check_close_idempotent(plugins: Plugins, env_id: str, seed: int = 1) -> None:
    """In process (no server): `close` may run twice, on a fresh environment and after reset (reset only
    for environments that lease no sandbox, which need a sandbox manager)."""
    registration = plugins.envs.get(env_id)

    async def run() -> None:
        for with_reset in (False, not registration.spec.sandbox_profiles):
            context = EnvContext(env_id=env_id, episode_id=f"compliance-{seed}", rewards=plugins.rewards)
            env = registration.factory(context)
            if with_reset:
                await _maybe_await(env.reset(seed=seed, options={}))
            for time in ("first", "second"):
                try:
                    await _maybe_await(env.close())
                except Exception as exc:
                    state = "after reset" if with_reset else "before reset"
                    raise _fail(
                        env_id, f"the {time} close {state} raised {type(exc).__name__}: {exc}"
                    ) from exc

    asyncio.run(run())


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


SERVER_CHECKS: dict[str, Callable[[Client, str], None]] = {
    "open_and_close": check_open_and_close,
    "seeds_reproduce": check_seeds_reproduce,
    "ends_by_itself": check_ends_by_itself,
    "rewards_declared": check_rewards_declared,
    "malformed_actions": check_malformed_actions,
}


def run_checks(client: Client, plugins: Plugins | None, env_id: str) -> dict[str, str]:
    """Every check on one environment: check name -> "" when it passed, else what went wrong."""
    outcomes: dict[str, str] = {}
    for name, check in SERVER_CHECKS.items():
        try:
            check(client, env_id)
            outcomes[name] = ""
        except (ComplianceError, PalaestraError) as exc:
            outcomes[name] = str(exc)
    if plugins is not None:
        try:
            check_close_idempotent(plugins, env_id)
            outcomes["close_idempotent"] = ""
        except ComplianceError as exc:
            outcomes["close_idempotent"] = str(exc)
    return outcomes
