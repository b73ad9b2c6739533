"""PPO survives a server restart (the rollout in flight is dropped, the envs reopen) and resumes from
its checkpoints."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import torch

from palaestra.agents.ppo import PPO, PPOConfig
from palaestra.agents.vector import RemoteVectorEnv
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig

ONLY_GYM = ["code", "math", "games", "tools"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(port: int) -> ServerThread:
    return ServerThread(ServerConfig(port=port, disabled_plugins=ONLY_GYM)).start()


def test_ppo_survives_a_server_restart_and_resumes_from_a_checkpoint(tmp_path: Path) -> None:
    port = _free_port()
    servers = [_server(port)]
    config = PPOConfig(total_steps=8 * 16 * 2, num_steps=16, epochs=1, seed=3)
    envs = RemoteVectorEnv(f"127.0.0.1:{port}", "gym/CartPole-v1", num_envs=2, timeout_s=30)
    updates: list[dict[str, float]] = []

    def restart_after_the_third(stats: dict[str, float]) -> None:
        updates.append(stats)
        if len(updates) == 3:
            servers[-1].stop(grace=0)
            servers.append(_server(port))

    try:
        trainer = PPO(envs, config)
        trainer.train(restart_after_the_third, checkpoint_dir=tmp_path, checkpoint_every=2)
        assert trainer.update == 8 and trainer.global_step == 8 * 16 * 2
        assert trainer.dropped_rollouts == 1  # the rollout that met the restart, and only it
        assert updates[-1]["dropped_rollouts"] == 1.0
        resumed = PPO(envs, config)
        resumed.resume(tmp_path)
        assert (resumed.update, resumed.global_step) == (trainer.update, trainer.global_step)
        for mine, theirs in zip(resumed.agent.parameters(), trainer.agent.parameters(), strict=True):
            assert torch.equal(mine, theirs)
    finally:
        envs.close()
        servers[-1].stop(grace=0)


async def test_grpo_rollouts_drop_episodes_lost_with_a_restarted_server() -> None:
    """The GRPO rollout engine over a server that restarts mid-rollout: the lost episodes come back as
    infrastructure failures (dropped by `drop_infra_failures`), never as rewards, and the next rollout
    runs on the new server."""
    from palaestra.agents.client import AsyncClient
    from palaestra.agents.rewards import drop_infra_failures
    from palaestra.agents.rollout import EpisodeRollout, RolloutEngine, TaskRequest
    from palaestra.types import Message

    port = _free_port()
    servers = [_server(port)]

    class SaysTheWordAfterARestart:
        restarted = False

        def fits(self, episode: EpisodeRollout) -> bool:
            return True

        async def act(self, episodes: Sequence[EpisodeRollout]) -> list[Message]:
            if not self.restarted:
                self.restarted = True
                servers[-1].stop(grace=0)
                servers.append(_server(port))
            return [Message("assistant", e.messages[0].content.split("'")[1]) for e in episodes]

    client = AsyncClient(f"127.0.0.1:{port}", timeout_s=30)
    try:
        engine = RolloutEngine(client, SaysTheWordAfterARestart(), max_turns=2)
        lost = await engine.run("echo", [TaskRequest(seed=1), TaskRequest(seed=2)], group_size=4)
        kept, dropped = drop_infra_failures(lost)
        assert (kept, dropped) == ([], 8)
        assert all(e.infra_failure and e.infra_failure.source == "connection" for g in lost for e in g)
        fresh = await engine.run("echo", [TaskRequest(seed=3)], group_size=4)
        kept, dropped = drop_infra_failures(fresh)
        assert dropped == 0 and all(e.terminated and e.turn_components[0][0].value == 1.0 for e in kept[0])
    finally:
        await client.aclose()
        servers[-1].stop(grace=0)
