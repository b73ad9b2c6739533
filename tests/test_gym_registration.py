"""`gymnasium.make("palaestra/<id>", address=..., token=...)` against a real server: options reach the
remote `gym.make`, render modes bring frames back, the catalog lists ids the installed Gymnasium has, and a
missing optional dependency is FAILED_PRECONDITION naming the extra."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import grpc
import gymnasium as gym
import numpy as np
import pytest

import palaestra.agents.gym  # noqa: F401  registers the palaestra/ ids with Gymnasium
from palaestra.agents.client import Client, PalaestraError
from palaestra.plugins.gym import listed_ids
from palaestra.server.app import ServerThread

StartServer = Callable[..., ServerThread]


@pytest.fixture
def gym_server(start_server: StartServer) -> ServerThread:
    return start_server(auth_token="s3cret")


def test_gymnasium_make_plays_a_remote_episode_with_a_token(gym_server: ServerThread) -> None:
    env = gym.make("palaestra/CartPole-v1", address=gym_server.address, token="s3cret")
    local = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs, local.reset(seed=7)[0])
    for action in [0, 1, 1, 0, 1]:
        remote_step, local_step = env.step(action), local.step(action)
        np.testing.assert_array_equal(remote_step[0], local_step[0])
        assert remote_step[1:4] == local_step[1:4]
    env.close()


def test_a_wrong_token_is_refused(gym_server: ServerThread) -> None:
    with pytest.raises(PalaestraError) as caught:
        gym.make("palaestra/CartPole-v1", address=gym_server.address, token="wrong")
    assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED


def test_module_prefix_registers_on_demand(server_address: str) -> None:
    env = gym.make("palaestra.agents.gym:palaestra/Acrobot-v1", address=server_address)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6,)
    env.close()


def _walk(env: gym.Env[Any, Any], actions: list[int]) -> tuple[Any, float, bool]:
    obs, reward, terminated = None, 0.0, False
    for action in actions:
        obs, gained, terminated, _, _ = env.step(action)
        reward = float(gained)
        if terminated:
            break
    return obs, reward, terminated


# FrozenLake 4x4: down, down, right, right, down, right reaches the goal when the ice is not slippery.
PATH = [1, 1, 2, 2, 1, 2]


def test_options_reach_the_remote_gym_make(server_address: str) -> None:
    steady = gym.make("palaestra/FrozenLake-v1", address=server_address, is_slippery=False)
    steady.reset(seed=0)
    assert _walk(steady, PATH)[1:] == (1.0, True)  # deterministic: reaches the goal every time
    steady.close()
    # slippery ice (the default) moves sideways two times in three: over ten seeds the path fails somewhere
    slippery = gym.make("palaestra/FrozenLake-v1", address=server_address)
    outcomes = []
    for seed in range(10):
        slippery.reset(seed=seed)
        outcomes.append(_walk(slippery, PATH)[1])
    assert outcomes != [1.0] * 10
    slippery.close()
    big = gym.make("palaestra/FrozenLake-v1", address=server_address, map_name="8x8", is_slippery=False)
    assert big.observation_space == gym.spaces.Discrete(16)  # the catalog describes the default map...
    obs, _ = big.reset(seed=0)
    assert big.get_wrapper_attr("remote_spec").options_schema["properties"]["map_name"]["type"] == "string"
    _walk(big, [2] * 7)  # ...but the episode runs on 8x8: seven steps right reach cell 7
    obs, *_ = big.step(1)
    assert int(obs) == 15  # row 1, column 7: only on an 8-wide map
    big.close()


def test_bad_make_options_are_invalid_argument(client: Client) -> None:
    with pytest.raises(PalaestraError) as caught:
        client.open("gym/FrozenLake-v1", options={"map_name": "3x3"})
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "map_name" in caught.value.message
    with pytest.raises(PalaestraError) as caught:
        client.open("gym/FrozenLake-v1", options={"is_slippery": "very"})
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_render_modes_bring_frames_back(server_address: str) -> None:
    text = gym.make("palaestra/FrozenLake-v1", address=server_address, render_mode="ansi")
    text.reset(seed=0)
    local = gym.make("FrozenLake-v1", render_mode="ansi")
    local.reset(seed=0)
    assert text.render() == local.render()
    text.step(2)
    local.step(2)
    frame = text.render()
    assert frame == local.render() and isinstance(frame, str) and "SFFF" in frame
    text.close()
    if importlib.util.find_spec("pygame") is None:
        pytest.skip("rgb_array rendering needs pygame (gymnasium[toy-text]), not installed here")
    frames = gym.make("palaestra/CartPole-v1", address=server_address, render_mode="rgb_array")
    frames.reset(seed=3)
    local_frames = gym.make("CartPole-v1", render_mode="rgb_array")
    local_frames.reset(seed=3)
    np.testing.assert_array_equal(frames.render(), local_frames.render())
    frames.close()


def test_unknown_render_mode_is_refused(server_address: str) -> None:
    with pytest.raises(ValueError, match="render_mode"):
        gym.make("palaestra/CartPole-v1", address=server_address, render_mode="human-ish")


def test_catalog_lists_ids_the_installed_gymnasium_has(client: Client) -> None:
    served = {spec.id for spec in client.list_envs() if spec.id.startswith("gym/")}
    assert {f"gym/{i}" for i in listed_ids()} <= served
    for env_id in served:
        assert env_id.removeprefix("gym/") in gym.registry, env_id
    assert any(env_id.startswith("gym/Taxi-v") for env_id in served)  # Taxi-v4 in Gymnasium 1.4


def test_any_environment_through_remote_v0(server_address: str) -> None:
    env = gym.make("palaestra/Remote-v0", env_id="echo/text", address=server_address)
    obs, _ = env.reset(seed=0)
    word = obs.split("'")[1]
    _, reward, terminated, _, _ = env.step(word)
    assert reward == 1.0 and terminated
    env.close()


@pytest.mark.skipif(importlib.util.find_spec("Box2D") is not None, reason="Box2D is installed here")
def test_missing_optional_dependency_is_failed_precondition(client: Client, server_address: str) -> None:
    with pytest.raises(PalaestraError) as caught:
        client.open("gym/LunarLander-v3")
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert 'pip install "gymnasium[box2d]"' in caught.value.message
    assert "Traceback" not in caught.value.message
    with pytest.raises(PalaestraError) as caught:
        gym.make("palaestra/LunarLander-v3", address=server_address)  # describe: the same answer
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
