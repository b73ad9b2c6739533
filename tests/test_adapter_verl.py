"""The verl agent loop, run inside verl's own agent-loop machinery against a real server.

verl pins transformers 5.10 (the project's venv has a newer one), so scripts/test.sh installs it into a
venv of its own (.ci-work/venv-verl) and this test runs tests/verl_loop_check.py there. verl's trainer
needs GPUs and a vLLM/SGLang rollout server; the check stands a scripted rollout server in for them,
so what is tested is everything between verl and Palaestra: prompts rendered by verl's Continuous Token
builder, tool calls reaching the environment, the loss mask and the reward.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERL_PYTHON = Path(os.environ.get("PALAESTRA_VERL_VENV", ROOT / ".ci-work/venv-verl")) / "bin/python"

if not VERL_PYTHON.exists() and os.environ.get("CI") != "true":  # CI creates it (scripts/test.sh)
    pytest.skip(
        f"no verl venv at {VERL_PYTHON.parent.parent} (scripts/test.sh creates it)", allow_module_level=True
    )


@pytest.mark.timeout(600)
def test_palaestra_agent_loop_in_verl(server_address: str) -> None:
    done = subprocess.run(
        [str(VERL_PYTHON), str(ROOT / "tests/verl_loop_check.py"), server_address],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    math, shop = (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))

    assert math["env_id"] == "math/arithmetic"
    assert "Compute the value of 8 + 1." in math["prompt"]
    assert math["response"] == math["policy_text"] == "\\boxed{9}<|end|>"
    assert math["mask_ones"] == math["mask_len"] == math["response_len"]
    assert math["reward"] == 1.0 and math["components"]["correct"] == 1.0

    assert "find_customer" in shop["prompt"]  # the environment's tools, rendered by the chat template
    assert shop["response"].startswith('<tool_call>{"name": "find_customer"')
    assert '<|tool|>{"customer_id": "C002"' in shop["response"]  # the tool's reply, as environment tokens
    assert shop["response"].endswith("You are verified.<|end|>")  # ends on the policy's last turn
    assert shop["policy_text"].count("<|end|>") == 2  # both policy turns, nothing else, carry mask 1
    assert 0 < shop["mask_ones"] < shop["mask_len"] == shop["response_len"] == len(shop["logprobs"])
    assert shop["components"]["checklist"] > 0
    assert shop["reward"] == pytest.approx(0.5 * shop["components"]["checklist"])
