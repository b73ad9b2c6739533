"""The verifiers adapter, run by verifiers' own evaluation (`vf-eval`) against a real server.

verifiers pins packages the project's own venv cannot share (mcp==2.0.0), so scripts/test.sh installs it
into a venv of its own (.ci-work/venv-verifiers) and this test runs `vf-eval` from there as a
subprocess. The policy is a scripted OpenAI-compatible server on loopback (tests/stub_openai.py); the
Palaestra server is the session's in-process server, reached over real gRPC from the vf-eval process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from stub_openai import StubOpenAI

ROOT = Path(__file__).resolve().parents[1]
VF_EVAL = Path(os.environ.get("PALAESTRA_VERIFIERS_VENV", ROOT / ".ci-work/venv-verifiers")) / "bin/vf-eval"

if not VF_EVAL.exists() and os.environ.get("CI") != "true":  # CI creates it (scripts/test.sh), never skips
    pytest.skip(
        f"no verifiers venv at {VF_EVAL.parent.parent} (scripts/test.sh creates it)", allow_module_level=True
    )


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _value(problem: str) -> Fraction:
    expression = re.search(r"value of (.*)\.$", problem.strip()).group(1)  # type: ignore[union-attr]
    return Fraction(eval(re.sub(r"(\d+)", r"Fraction(\1)", expression), {"Fraction": Fraction}))


def vf_eval(
    server_address: str, stub: StubOpenAI, tmp_path: Path, env_id: str, *extra: str
) -> list[dict[str, Any]]:
    command = [
        str(VF_EVAL),
        "palaestra-verifiers",
        "--env.taskset.address",
        server_address,
        "--env.taskset.env-id",
        env_id,
        "-m",
        stub.model,
        "--client.base-url",
        stub.base_url,
        "--no-rich",
        "--output-dir",
        str(tmp_path),
        *extra,
    ]
    # vf-eval finds `uv` (which runs its chat harness) in its own venv; no Prime account is involved
    path = f"{VF_EVAL.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    environment = {**os.environ, "PATH": path, "PRIME_API_KEY": "unused"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=540, env=environment, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [traces] = list(tmp_path.glob("*/traces.jsonl"))
    return [json.loads(line) for line in traces.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(600)
def test_vf_eval_scores_palaestra_math_episodes(server_address: str, tmp_path: Path) -> None:
    def answer(messages: list[dict[str, Any]]) -> str:
        value = _value(_text(messages[-1]["content"]))
        # right exactly when the value is even, so the rewards must differ by task
        return f"The answer is \\boxed{{{value if value % 2 == 0 else value + 1}}}."

    with StubOpenAI(answer) as stub:
        episodes = vf_eval(server_address, stub, tmp_path, "math/arithmetic", "--env.taskset.num-tasks", "6")
    assert len(episodes) == 6 and len(stub.requests) == 6
    expected = []
    for episode in episodes:
        assert episode["ok"], episode["errors"]
        [trace] = episode["traces"]
        system, user, reply = (node["message"] for node in trace["nodes"])
        assert system["role"] == "system" and "\\boxed{}" in system["content"]
        assert user["role"] == "user" and reply["role"] == "assistant"
        right = _value(_text(user["content"])) % 2 == 0
        expected.append(right)
        assert trace["rewards"]["palaestra"]["score"] == (1.0 if right else 0.0)
        assert trace["metrics"]["palaestra/correct"] == (1.0 if right else 0.0)
        assert trace["metrics"]["palaestra/episode_done"] == 1.0
    assert any(expected) and not all(expected)  # both outcomes really occurred
    system_seen = stub.requests[0]["messages"][0]
    assert system_seen["role"] == "system"


@pytest.mark.timeout(600)
def test_vf_eval_plays_a_multi_turn_tool_episode(server_address: str, tmp_path: Path) -> None:
    def answer(messages: list[dict[str, Any]]) -> str:
        if len(messages) <= 2:  # system + the customer's first message
            email = re.search(r"[a-z.]+@example\.com", _text(messages[-1]["content"])).group(0)  # type: ignore[union-attr]
            call = {"name": "find_customer", "arguments": {"email": email}}
            return f"Let me check.\n<tool_call>{json.dumps(call)}</tool_call>"
        return "Thank you, you are verified."

    with StubOpenAI(answer) as stub:
        episodes = vf_eval(
            server_address,
            stub,
            tmp_path,
            "tools/shop",
            "--env.taskset.seeds",
            "[1]",
            "--env.max-turns",
            "2",
        )
    [episode] = episodes
    assert episode["ok"], episode["errors"]
    [trace] = episode["traces"]
    assert '"name": "find_customer"' in trace["task"]["data"]["system_prompt"]
    roles = [node["message"]["role"] for node in trace["nodes"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    tool_reply = _text(trace["nodes"][3]["message"]["content"])
    assert "customer_id" in tool_reply or "verified" in tool_reply.lower(), tool_reply
    assert trace["metrics"]["palaestra/checklist"] > 0
    assert len(stub.requests) == 2


@pytest.mark.timeout(600)
def test_vf_eval_records_an_infrastructure_failure_as_an_error(start_server: Any, tmp_path: Path) -> None:
    server = start_server(
        plugin_modules=["plugin_for_tests"], disabled_plugins=["code", "math", "games", "tools"]
    )
    with StubOpenAI(lambda messages: "an answer") as stub:
        [episode] = vf_eval(
            server.address, stub, tmp_path, "test/broken-verifier", "--env.taskset.seeds", "[1]"
        )
    assert not episode["ok"]
    assert "verifier timed out" in json.dumps(episode["errors"])
    assert all("palaestra" not in trace.get("rewards", {}) for trace in episode["traces"])
