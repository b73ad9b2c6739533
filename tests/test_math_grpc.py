"""Math episodes through the real gRPC server: a graded episode, and a verifier hang in one episode
that does not hold up another."""

from __future__ import annotations

import asyncio

from palaestra.agents.client import AsyncClient, Client
from palaestra.plugins.math.tasks import arithmetic_task
from palaestra.types import Action, ComponentStatus


def test_math_episode_over_grpc(client: Client) -> None:
    spec = client.describe("math/arithmetic")
    assert spec.max_episode_steps == 1 and {c.name for c in spec.reward_components} >= {"correct", "format"}
    [first] = client.open("math/arithmetic", seed=21, options={"difficulty": 2})
    problem = first.agents["agent"].observation.messages[1].content
    task = arithmetic_task(21, 2, "train")
    assert problem == task.problem
    step = client.step(first.episode_id, Action(text=f"3 * 4 = 12\n\\boxed{{{task.answer}}}"))
    result = step.agents["agent"]
    by_name = {c.name: c for c in result.components}
    assert step.done and by_name["correct"].value == 1.0 and by_name["format"].value == 0.0
    assert result.scalar_reward >= 1.1
    client.close(first.episode_id)


async def test_a_verifier_hang_does_not_block_another_episode(server_address: str) -> None:
    async with AsyncClient(server_address) as slow_client, AsyncClient(server_address) as fast_client:
        [hung] = await slow_client.open("math/arithmetic", seed=1, options={"verify_deadline_s": 4.0})
        [fast] = await fast_client.open("math/arithmetic", seed=2)
        hang = asyncio.ensure_future(slow_client.step(hung.episode_id, Action(text="\\boxed{9^{9^{9}}}")))
        await asyncio.sleep(0.3)
        answer = arithmetic_task(2, 1, "train").answer
        quick = await fast_client.step(fast.episode_id, Action(text=f"\\boxed{{{answer}}}"))
        assert not hang.done(), "the other episode's step waited for the hanging verification"
        assert {c.name: c for c in quick.agents["agent"].components}["correct"].value == 1.0
        slow = await hang
        correct = {c.name: c for c in slow.agents["agent"].components}["correct"]
        assert correct.status is ComponentStatus.TIMEOUT and slow.infra_failure is None
        await slow_client.close(hung.episode_id)
        await fast_client.close(fast.episode_id)
