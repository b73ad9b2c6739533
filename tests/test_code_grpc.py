"""The code plugin through a real server over real gRPC (the shared in-process server from conftest)."""

from __future__ import annotations

from palaestra.agents.client import Client
from palaestra.plugins.code.reference import make_scripted_policy
from palaestra.plugins.code.tasks import builtin_tasks
from palaestra.types import ComponentStatus, RewardKind

TASK = next(t for t in builtin_tasks() if t.id == "fizzbuzz-word")


def test_repair_episode_over_grpc(client: Client) -> None:
    [step] = client.open("code/python-repair", seed=0, task=TASK.id, options={"max_submissions": 2})
    assert step.result.observation.info["task_id"] == TASK.id
    wrong = "```python\ndef fizzbuzz_word(n):\n    return str(n)\n```"
    step = client.step(step.episode_id, wrong)
    assert not step.done
    assert "Public tests: 1/2 passed." in step.result.observation.messages[0].content
    assert "1 submission left" in step.result.observation.messages[0].content
    step = client.step(step.episode_id, f"```python\n{TASK.reference['python']}```")
    assert step.done and step.infra_failure is None
    values = {c.name: c.value for c in step.result.components if c.status is ComponentStatus.OK}
    assert values["outcome.all_hidden_pass"] == 1.0
    assert values["process.public_delta"] == 0.5
    assert {c.kind for c in step.result.components} >= {
        RewardKind.OUTCOME,
        RewardKind.PROCESS,
        RewardKind.CHECKLIST,
    }
    assert {i.item_id for i in step.result.checklist} >= {"hidden_tests_pass", "no_forbidden_calls"}
    assert all(i.reason for i in step.result.checklist)
    [summary] = client.close(step.episode_id)
    assert summary.infra_failure is None


def test_scripted_agent_solves_a_cpp_task_in_two_turns(client: Client) -> None:
    task = next(t for t in builtin_tasks() if "cpp" in t.languages)
    policy = make_scripted_policy("code/cpp-repair", seed=0)
    assert policy is not None
    [step] = client.open("code/cpp-repair", seed=0, task=task.id)
    turns = 0
    while not step.done:
        step = client.step(step.episode_id, policy(step))
        turns += 1
    assert turns == 2
    values = {c.name: c.value for c in step.result.components}
    assert values["outcome.all_hidden_pass"] == 1.0
    client.close(step.episode_id)
