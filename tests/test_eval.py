"""`palaestra eval`: statistics, and end to end against a real vLLM OpenAI-compatible server and in-process.

The model is the tiny one of tests/vllm_helpers.py, taught to call the `search` tool, then answer.
What is checked is the plumbing: the server's tool-call parser turns the model's text into tool calls, the
calls reach the environment (its real tool results come back), the rewards and checklist items come back
with their statuses, and every episode is written out.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest

from palaestra.agents.evaluate import mean_ci, pass_at_k, read_records, summarize, write_records
from palaestra.cli import main
from tests.vllm_helpers import (
    MATH_REPLY,
    PLAIN_ENV,
    TOOL_ENV,
    TOOL_QUERY,
    openai_server,
    run_vllm,
    tool_model_dir,
)


def test_pass_at_k_is_the_chance_that_one_of_k_draws_passes() -> None:
    for n, c, k in [(4, 0, 1), (4, 1, 1), (4, 1, 2), (5, 2, 3), (6, 6, 2), (3, 1, 3)]:
        draws = list(itertools.combinations([True] * c + [False] * (n - c), k))
        exact = sum(any(draw) for draw in draws) / len(draws)
        assert math.isclose(pass_at_k(n, c, k), exact), (n, c, k)


def test_confidence_intervals_are_over_tasks_or_over_episodes_of_a_single_task() -> None:
    mean, half, count = mean_ci([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    assert (mean, count) == (0.5, 3)
    assert math.isclose(half, 1.959964 * math.sqrt(0.25 / 3))
    mean, half, count = mean_ci([[1.0, 0.0, 1.0, 0.0]])
    assert (mean, count) == (0.5, 4) and math.isclose(half, 1.959964 * math.sqrt((1 / 3) / 4))
    assert math.isnan(mean_ci([[]])[0])


def _record(task: int, passed: bool | None, value: float, infra: bool = False) -> dict[str, Any]:
    status = "ok" if passed is not None else "timeout"
    return {
        "env_id": "x/y",
        "task_index": task,
        "passed": passed,
        "return": None if infra else value,
        "infra_failure": {"source": "sandbox", "message": "down"} if infra else None,
        "components": [] if infra else [{"name": "correct", "value": value, "status": status}],
        "turns": 1,
        "tool_calls": [],
    }


def test_summary_leaves_out_infrastructure_failures_and_unscored_episodes() -> None:
    records = [
        _record(0, True, 1.0),
        _record(0, False, 0.0),
        _record(1, False, 0.0),
        _record(1, None, 0.0),  # the verifier timed out: not a wrong answer
        _record(1, None, 0.0, infra=True),
    ]
    summary = summarize(records, ks=[1, 2])
    assert (summary.episodes, summary.scored, summary.infra_failures, summary.unscored) == (5, 3, 1, 1)
    assert summary.pass_at[1][0] == pytest.approx((0.5 + 0.0) / 2)  # task 1: one scored episode, failed
    assert summary.pass_at[2][0] == pytest.approx(1.0) and summary.pass_at[2][2] == 1  # task 0 only
    assert summary.means["correct"][0] == pytest.approx((0.5 + 0.0) / 2)  # the timed-out value is left out


# ---------------------------------------------------------------- against vLLM


@pytest.fixture
def tool_model(tmp_path_factory: pytest.TempPathFactory, server_address: str) -> Path:
    """The tiny model taught to call a tool, then answer (tests/vllm_helpers.py)."""
    return tool_model_dir(tmp_path_factory, server_address)


def _check_episodes(records: list[dict[str, Any]], tasks: int, episodes: int) -> None:
    """The plumbing, episode by episode."""
    tool_records = [r for r in records if r["env_id"] == TOOL_ENV]
    math_records = [r for r in records if r["env_id"] == PLAIN_ENV]
    assert len(tool_records) == len(math_records) == tasks * episodes
    for record in tool_records:
        assert record["infra_failure"] is None and record["end"] == "terminated", record["end"]
        messages = record["messages"]
        calls = [m for m in messages if m["role"] == "assistant" and m["tool_calls"]]
        assert calls, messages  # the server's parser made a structured tool call of the model's text
        call = calls[0]["tool_calls"][0]
        assert call["function"]["name"] == "search"
        assert json.loads(call["function"]["arguments"]) == {"query": TOOL_QUERY}
        answer = messages[messages.index(calls[0]) + 1]
        assert answer["role"] == "tool" and answer["tool_call_id"] == call["id"]
        assert f"Search results for '{TOOL_QUERY}'" in answer["content"]  # the environment's real answer
        final = [m for m in messages if m["role"] == "assistant"][-1]  # (the environment may say goodbye)
        assert final["content"] and not final["tool_calls"] and messages.index(final) > messages.index(answer)
        assert record["tool_calls"][0]["name"] == "search" and record["turns"] == 2
        names = {(c["name"], c["status"]) for c in record["components"]}
        assert ("answer_correct", "ok") in names and ("checklist", "ok") in names
        assert record["checklist"] and all(item["status"] for item in record["checklist"])
        # The tiny model was taught these three tasks' answers: the environment's verdict comes back.
        assert record["passed"] is True and record["seed"] == record["task_index"], record["components"]
        assert record["timings"]["run_wall_s"] >= record["timings"]["run_env_s"] > 0
    for record in math_records:
        assert record["messages"][-1]["content"] == MATH_REPLY and record["turns"] == 1
        [correct] = [c for c in record["components"] if c["name"] == "correct"]
        assert correct["status"] == "ok" and record["passed"] is (correct["value"] >= 1.0)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_eval_against_a_vllm_openai_server(
    tool_model: Path, server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "episodes.jsonl"
    with openai_server(tool_model, tmp_path) as base_url:
        code = main(
            [
                "eval",
                TOOL_ENV,
                PLAIN_ENV,
                "--base-url",
                base_url,
                "--model",
                "tiny",
                "--address",
                server_address,
                "--episodes",
                "2",
                "--tasks",
                "3",
                "--temperature",
                "0",
                "--max-turns",
                "3",
                "--max-tokens",
                "80",
                "--concurrency",
                "4",
                "--out",
                str(out),
            ]
        )
    printed = capsys.readouterr().out
    assert code == 0, printed
    for text in ("pass@1", "pass@2", "answer_correct", "checklist", "return", "± "):
        assert text in printed, printed
    records = read_records(out)
    _check_episodes(records, tasks=3, episodes=2)
    parquet = write_records(records, tmp_path / "episodes.parquet")  # the same records, as Parquet
    assert read_records(parquet)[0]["messages"] == records[0]["messages"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_eval_with_an_in_process_vllm_engine(tool_model: Path, server_address: str, tmp_path: Path) -> None:
    out = tmp_path / "episodes.jsonl"
    command = ["-m", "palaestra", "eval", TOOL_ENV, PLAIN_ENV, "--vllm", str(tool_model)]
    command += ["--address", server_address, "--episodes", "2", "--tasks", "3", "--temperature", "0"]
    command += ["--max-turns", "3", "--max-tokens", "80", "--max-context", "2048", "--no-progress"]
    command += ["--out", str(out)]
    result = run_vllm(command, tmp_path, timeout=800)
    assert "pass@1" in result.stdout and "answer_correct" in result.stdout
    _check_episodes(read_records(out), tasks=3, episodes=2)
