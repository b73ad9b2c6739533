"""PPO over RemoteVectorEnv: CartPole through the real server learns (return clearly rises).

This is the claim README makes for PPO, checked in seconds: from random play (about 20) to more than
twice that, above 45, in 24,576 steps. Solving CartPole (475 of 500) takes about ten times as many
steps; `examples/train_ppo_cartpole.py` does that, measured in docs/performance.md, not tested."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

import torch

from palaestra.agents.ppo import PPO, PPOConfig, Rollout, advantages_gae
from palaestra.agents.vector import RemoteVectorEnv


def test_ppo_return_rises_on_cartpole_through_the_server(server_address: str) -> None:
    envs = RemoteVectorEnv(server_address, "gym/CartPole-v1", num_envs=8)
    try:
        trainer = PPO(envs, PPOConfig(total_steps=24_576, seed=1))
        returns = trainer.train()
    finally:
        envs.close()
    first, last = float(np.mean(returns[:20])), float(np.mean(returns[-20:]))
    # A random CartPole policy averages about 20; a short PPO run more than doubles that.
    assert first < 35
    assert last > 2 * first and last > 45, (first, last)


def test_gae_stops_at_episode_ends() -> None:
    ones = torch.ones((3, 1))
    rollout = Rollout(
        observations=torch.zeros((3, 1, 1)),
        actions=torch.zeros((3, 1), dtype=torch.long),
        logprobs=torch.zeros((3, 1)),
        rewards=ones,
        dones=torch.tensor([[0.0], [1.0], [0.0]]),
        values=torch.zeros((3, 1)),
        valid=ones,
    )
    advantages = advantages_gae(rollout, last_value=torch.tensor([10.0]), gamma=1.0, lam=1.0)
    # Steps 0-1 form one episode (return 2 then 1); step 2 starts another that bootstraps from 10.
    assert advantages[:, 0].tolist() == pytest.approx([2.0, 1.0, 11.0])
