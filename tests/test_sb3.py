"""SB3VecEnv against Stable-Baselines3 itself, over real gRPC: the same steps as SB3's DummyVecEnv
(same seeds, same actions), and PPO training through it."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

# CI installs it ([dev] includes the sb3 extra) and must not skip: there, a missing package fails.
if os.environ.get("CI") != "true":
    pytest.importorskip("stable_baselines3", reason="stable-baselines3 is not installed (the [sb3] extra)")

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

from palaestra.agents.sb3 import SB3VecEnv

pytestmark = pytest.mark.timeout(300)


def test_steps_match_sb3_dummy_vec_env(server_address: str) -> None:
    remote = SB3VecEnv(server_address, "gym/CartPole-v1", 4)
    local = DummyVecEnv([lambda: gym.make("CartPole-v1")] * 4)
    remote.seed(7)
    local.seed(7)
    np.testing.assert_array_equal(remote.reset(), local.reset())
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(200):
        actions = rng.integers(0, 2, 4)
        remote.step_async(actions)
        local.step_async(actions)
        obs, rewards, dones, infos = remote.step_wait()
        obs_l, rewards_l, dones_l, infos_l = local.step_wait()
        np.testing.assert_array_equal(obs, obs_l)
        np.testing.assert_array_equal(rewards, rewards_l)
        np.testing.assert_array_equal(dones, dones_l)
        for info, info_l in zip(infos, infos_l, strict=True):
            assert info["TimeLimit.truncated"] == info_l["TimeLimit.truncated"]
            assert ("terminal_observation" in info) == ("terminal_observation" in info_l)
            if "terminal_observation" in info_l:
                ended += 1
                np.testing.assert_array_equal(info["terminal_observation"], info_l["terminal_observation"])
    assert ended > 4
    assert remote.get_attr("render_mode") == [None] * 4
    assert remote.env_is_wrapped(gym.Wrapper) == [False] * 4
    with pytest.raises(AttributeError, match="live in the server"):
        remote.env_method("render")
    remote.close()


def test_ppo_learns_cartpole_through_the_adapter(server_address: str) -> None:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        env = VecNormalize(VecMonitor(SB3VecEnv(server_address, "gym/CartPole-v1", 8)), norm_reward=False)
        env.seed(0)
        model = PPO("MlpPolicy", env, n_steps=128, batch_size=256, seed=0, verbose=0)
        model.learn(12_288)
        assert model.ep_info_buffer is not None
        returns = [info["r"] for info in model.ep_info_buffer]
        # A random policy averages about 22 on CartPole; PPO after 12k steps is well above it.
        assert len(returns) > 20 and np.mean(returns[-20:]) > 40, returns[-20:]
        env.close()
    finally:
        torch.set_num_threads(threads)
