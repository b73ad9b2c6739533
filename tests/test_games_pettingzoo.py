"""RemoteAECEnv / RemoteParallelEnv against the served games over real gRPC: PettingZoo's own
conformance tests (api_test, parallel_api_test, seed tests)."""

from __future__ import annotations

import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

from palaestra.agents.client import Client
from palaestra.agents.pettingzoo import RemoteAECEnv, RemoteParallelEnv


@pytest.mark.parametrize("env_id", ["games/tictactoe", "games/connect4", "pettingzoo/classic/tictactoe_v3"])
def test_remote_aec_env_passes_api_test(server_address: str, env_id: str) -> None:
    env = RemoteAECEnv(server_address, env_id)
    try:
        api_test(env, num_cycles=60)
    finally:
        env.close()


def test_remote_aec_env_chess_passes_api_test(server_address: str) -> None:
    env = RemoteAECEnv(server_address, "games/chess")
    try:
        api_test(env, num_cycles=15)
    finally:
        env.close()


def test_remote_aec_env_is_seed_deterministic(server_address: str) -> None:
    with Client(server_address) as client:
        seed_test(lambda: RemoteAECEnv(client, "games/connect4"), num_cycles=50)


def test_remote_parallel_env_passes_parallel_api_test(server_address: str) -> None:
    env = RemoteParallelEnv(server_address, "games/rps")
    try:
        parallel_api_test(env, num_cycles=30)
    finally:
        env.close()


def test_remote_parallel_env_is_seed_deterministic(server_address: str) -> None:
    with Client(server_address) as client:
        parallel_seed_test(lambda: RemoteParallelEnv(client, "games/rps"), num_cycles=20)


def test_single_seat_view_against_minimax(server_address: str) -> None:
    """With an opponent, the AEC view holds one seat; minimax never loses tic-tac-toe."""
    env = RemoteAECEnv(server_address, "games/tictactoe", options={"opponent": "minimax", "seat": "player_2"})
    try:
        for seed in range(3):
            env.reset(seed=seed)
            assert env.agents == ["player_2"]
            for agent in env.agent_iter():
                observation, _, terminated, truncated, _ = env.last()
                if terminated or truncated:
                    assert env._cumulative_rewards[agent] <= 0  # a random player cannot beat minimax
                    env.step(None)
                    continue
                env.step(env.action_space(agent).sample(observation["action_mask"]))
    finally:
        env.close()
