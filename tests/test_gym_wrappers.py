"""RemoteEnv against served Gymnasium environments (RemoteVectorEnv: tests/test_vector.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from palaestra.agents.gym import RemoteEnv


def test_remote_env_passes_gymnasium_check_env(server_address: str) -> None:
    for env_id in ("gym/CartPole-v1", "gym/Pendulum-v1", "gym/FrozenLake-v1"):
        env = RemoteEnv(server_address, env_id)
        check_env(env, skip_render_check=True)
        env.close()


def test_remote_env_matches_local_gymnasium(server_address: str) -> None:
    remote, local = RemoteEnv(server_address, "gym/CartPole-v1"), gym.make("CartPole-v1")
    obs_r, _ = remote.reset(seed=42)
    obs_l, _ = local.reset(seed=42)
    np.testing.assert_array_equal(obs_r, obs_l)
    for action in [0, 1, 1, 0, 1, 0, 0, 1] * 4:
        step_r, step_l = remote.step(action), local.step(action)
        np.testing.assert_array_equal(step_r[0], step_l[0])
        assert step_r[1:4] == step_l[1:4]
        if step_l[2] or step_l[3]:
            break
    remote.close()


def test_remote_env_serves_chat_environments_as_text(server_address: str) -> None:
    env = RemoteEnv(server_address, "echo/text")
    obs, _ = env.reset(seed=0)
    word = obs.split("'")[1]
    _, reward, terminated, _, info = env.step(word)
    assert reward == 1.0 and terminated and info["reward_components"] == {"said_word": 1.0}
    env.close()
