"""The compliance suite: every registered environment, driven through a real server over real gRPC.

For each environment: open and close, identical first observations for identical seeds, a valid step,
a malformed action refused with INVALID_ARGUMENT (and the episode still usable), an episode run to its
end, and a step after the end refused with FAILED_PRECONDITION.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from palaestra import types as t
from palaestra.agents.client import Client, PalaestraError
from palaestra.pluginmanager import load_plugins

ENV_IDS = load_plugins().envs.ids()
STEP_CAP = 1000  # no compliant environment may need more steps than this to end under valid actions


def valid_action(spec: t.EnvSpec, result: t.AgentResult) -> t.Action:
    space = spec.action_space
    obs = result.observation
    if isinstance(space, t.DiscreteSpace):
        if obs.action_mask is not None and obs.action_mask.any():
            return t.Action(discrete=space.start + int(np.flatnonzero(obs.action_mask)[0]))
        return t.Action(discrete=space.start)
    if isinstance(space, t.BoxSpace):
        low = np.asarray(space.low or [0.0] * int(np.prod(space.shape)), dtype=space.dtype).reshape(
            space.shape
        )
        high = np.asarray(space.high or [0.0] * int(np.prod(space.shape)), dtype=space.dtype).reshape(
            space.shape
        )
        return t.Action(tensor=np.clip(np.zeros(space.shape, dtype=space.dtype), low, high))
    if isinstance(space, (t.MultiDiscreteSpace, t.MultiBinarySpace)):
        shape = (len(space.nvec),) if isinstance(space, t.MultiDiscreteSpace) else space.shape
        return t.Action(tensor=np.zeros(shape, dtype=np.int64))
    if obs.legal_actions:
        return t.Action(text=obs.legal_actions[0])
    return t.Action(text="I do not know.")


def malformed_action(spec: t.EnvSpec) -> t.Action:
    if isinstance(spec.action_space, (t.ChatSpace, t.TextSpace)):
        return t.Action(discrete=0)
    if isinstance(spec.action_space, t.DiscreteSpace):
        return t.Action(text="not a number")
    return t.Action(tensor=np.zeros((97, 3), dtype=np.float32))


def acting_agents(spec: t.EnvSpec, step: t.EpisodeStep) -> dict[str, t.Action]:
    if spec.kind is t.EnvKind.SIMULTANEOUS:
        return {agent: valid_action(spec, step.agents.get(agent, t.AgentResult())) for agent in spec.agents}
    agent = step.next_agent or next(iter(step.agents), spec.agents[0])
    return {agent: valid_action(spec, step.agents.get(agent, t.AgentResult()))}


def observation_fingerprint(step: t.EpisodeStep) -> list[tuple[str, str]]:
    fingerprint = []
    for agent, result in sorted(step.agents.items()):
        obs = result.observation
        tensor = obs.tensor.tobytes() if obs.tensor is not None else b""
        fingerprint.append(
            (agent, repr(([(m.role, m.content) for m in obs.messages], obs.legal_actions, tensor)))
        )
    return fingerprint


@pytest.fixture(params=ENV_IDS)
def env_id(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_open_and_close(client: Client, env_id: str) -> None:
    spec = client.describe(env_id)
    [first] = client.open(env_id, seed=3)
    assert first.infra_failure is None, first.infra_failure
    assert first.agents, "the first observation names at least one agent"
    assert set(first.agents) <= set(spec.agents)
    [summary] = client.close(first.episode_id)
    assert summary.env_id == env_id and summary.close_reason == "client"


def test_seed_determinism(client: Client, env_id: str) -> None:
    a, b = client.open(env_id, seed=11, count=2)
    [c] = client.open(env_id, seed=11)
    assert observation_fingerprint(a) == observation_fingerprint(b) == observation_fingerprint(c)
    client.close([a.episode_id, b.episode_id, c.episode_id])


def test_malformed_action_is_refused_and_episode_survives(client: Client, env_id: str) -> None:
    spec = client.describe(env_id)
    [first] = client.open(env_id, seed=5)
    agent = first.next_agent or next(iter(first.agents))
    with pytest.raises(PalaestraError) as refused:
        client.step(first.episode_id, {agent: malformed_action(spec)})
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "expected" in refused.value.message
    step = client.step(first.episode_id, acting_agents(spec, first))
    assert step.infra_failure is None, step.infra_failure
    client.close(first.episode_id)


def test_runs_to_its_end_then_refuses_steps(client: Client, env_id: str) -> None:
    spec = client.describe(env_id)
    [step] = client.open(env_id, seed=2)
    cap = min(spec.max_episode_steps or STEP_CAP, STEP_CAP)
    for _ in range(cap):
        step = client.step(step.episode_id, acting_agents(spec, step))
        assert step.infra_failure is None, step.infra_failure
        if step.done:
            break
    assert step.done, f"{env_id} did not end within {cap} valid steps"
    with pytest.raises(PalaestraError) as refused:
        client.step(step.episode_id, acting_agents(spec, step))
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    [summary] = client.close(step.episode_id)
    assert summary.steps >= 1 and (summary.terminated or summary.truncated)


def test_unknown_environment_lists_known_ones(client: Client) -> None:
    with pytest.raises(PalaestraError) as refused:
        client.open("no/such-env")
    assert refused.value.code is grpc.StatusCode.NOT_FOUND
    assert "echo/text" in refused.value.message
