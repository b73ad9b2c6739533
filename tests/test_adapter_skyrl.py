"""The SkyRL-Gym adapter, through the real `skyrl_gym` package (make/init/step) against a real server."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # CI installs skyrl-gym (scripts/test.sh) and must not skip
    pytest.importorskip("skyrl_gym", reason="skyrl-gym is not installed (pip install -e '.[skyrl]')")

import skyrl_gym
from omegaconf import OmegaConf
from skyrl_gym.envs.base_text_env import BaseTextEnv

from palaestra.agents.skyrl_adapter import PalaestraInfraError, PalaestraTextEnv, register
from palaestra.agents.text_episode import close_shared_clients


@pytest.fixture(autouse=True, scope="module")
def _close_clients() -> Iterator[None]:
    yield
    close_shared_clients()  # before the session's server stops


def make(address: str, env_id: str, **extras: object) -> PalaestraTextEnv:
    register()
    # SkyRL hands env_config over as an OmegaConf section; use the same type.
    config = OmegaConf.create({"address": address, "env_id": env_id})
    env = skyrl_gym.make("palaestra", env_config=config, extras=extras)
    assert isinstance(env, PalaestraTextEnv) and isinstance(env, BaseTextEnv)
    return env


def test_plain_episode_right_and_wrong_answers(server_address: str) -> None:
    for reply, reward in (("\\boxed{9}", 1.0), ("\\boxed{10}", 0.0)):
        env = make(server_address, "math/arithmetic", seed=1)
        prompt, info = env.init([{"role": "user", "content": "placeholder"}])
        assert info["episode_id"]
        assert [m["role"] for m in prompt] == ["system", "user"]
        assert "8 + 1" in prompt[1]["content"]
        out = env.step(f"The sum is {reply}.")
        assert out["done"] and out["observations"] == []
        assert out["reward"] == pytest.approx(reward)
        assert env.get_metrics()["return"] == pytest.approx(reward)
        env.close()


def test_tool_calls_in_text_reach_the_environment(server_address: str) -> None:
    env = make(server_address, "tools/shop", extra_info={"seed": 1})
    prompt, _ = env.init([])
    system = prompt[0]["content"]
    assert "<tools>" in system and '"name": "find_customer"' in system
    email = re.search(r"[a-z.]+@example\.com", prompt[-1]["content"]).group(0)  # type: ignore[union-attr]
    order = re.search(r"O\d+", prompt[-1]["content"]).group(0)  # type: ignore[union-attr]
    calls = [
        {"name": "find_customer", "arguments": {"email": email}},
        {"name": "get_order", "arguments": {"order_id": order}},
    ]
    text = "".join(f"<tool_call>{json.dumps(call)}</tool_call>" for call in calls)
    out = env.step(f"Let me look.\n{text}")
    assert not out["done"]
    assert [m["role"] for m in out["observations"]] == ["tool", "tool"]
    status = json.loads(out["observations"][1]["content"])["status"]
    out = env.step(f"Your order {order} is {status}.")
    # the shop's simulated customer answers the plain reply with a follow-up question
    assert not out["done"]
    assert [m["role"] for m in out["observations"]] == ["user"]
    assert out["metadata"]["components"]["checklist"] > 0  # the checklist saw the verified lookup
    env.close()


def test_config_errors_and_infra_failures_are_not_rewards(start_server: Any) -> None:
    register()
    with pytest.raises(ValueError, match="address"):
        skyrl_gym.make("palaestra", env_config={"env_id": "math/arithmetic"}, extras={})
    server = start_server(
        plugin_modules=["plugin_for_tests"], disabled_plugins=["code", "math", "games", "tools"]
    )
    env = make(server.address, "test/broken-verifier")
    env.init([])
    with pytest.raises(PalaestraInfraError, match="verifier timed out"):
        env.step("an answer")
    assert env.episode.reward is None and env.episode.episode_id is None  # no reward, episode closed
