"""The TRL adapter, driven by a real `trl.GRPOTrainer` on a tiny local model against a real server."""

from __future__ import annotations

import json
import os
import re
import string
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # CI installs TRL (scripts/test.sh) and must not skip
    pytest.importorskip("trl", reason="TRL is not installed (pip install -e '.[trl]'; scripts/test.sh does)")

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast
from transformers.utils import get_json_schema
from trl import GRPOConfig, GRPOTrainer
from trl.chat_template_utils import add_response_schema, parse_response, qwen3_chat_template

from palaestra.agents.client import Client
from palaestra.agents.tiny import build_model
from palaestra.agents.trl_adapter import (
    PalaestraEnvironment,
    PalaestraEpisode,
    palaestra_reward,
    tool_method,
)

SHOP_TOOL = {
    "type": "function",
    "function": {
        "name": "return_items",
        "description": "Return items of a delivered order.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "description": "The order."},
                "skus": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "reason": {"type": "string", "enum": ["broken", "unwanted"]},
                "count": {"type": "integer"},
            },
            "required": ["order_id", "skus"],
        },
    },
}


def qwen_style_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer carrying TRL's copy of the Qwen3 chat template, which TRL knows how to
    parse tool calls from; built in code, nothing downloaded."""
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|unk|>"]
    vocab = {token: index for index, token in enumerate(special)}
    for char in sorted(set(string.printable)):
        vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<|unk|>"))
    backend.add_special_tokens(special)
    backend.add_tokens(["<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_response>"])
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|unk|>"
    )
    tokenizer.chat_template = qwen3_chat_template
    tokenizer.padding_side = "left"
    return tokenizer


def test_environment_tools_become_methods_with_the_same_schema() -> None:
    schema = get_json_schema(type("WithTool", (PalaestraEpisode,), {"t": tool_method(SHOP_TOOL)}).t)
    function = schema["function"]
    assert function["name"] == "return_items"
    assert function["description"] == "Return items of a delivered order."
    properties = function["parameters"]["properties"]
    assert properties["order_id"] == {"type": "string", "description": "The order."}
    assert properties["skus"]["type"] == "array" and properties["skus"]["items"] == {"type": "string"}
    assert properties["reason"]["enum"] == ["broken", "unwanted"]
    assert properties["count"]["type"] == "integer"
    assert function["parameters"]["required"] == ["order_id", "skus"]


def test_a_tool_name_trl_cannot_offer_is_refused() -> None:
    bad = {"function": {"name": "reset", "parameters": {"properties": {}}}}
    with pytest.raises(ValueError, match="cannot be a TRL tool"):
        tool_method(bad)


def test_episode_objects_expose_exactly_the_environment_tools(server_address: str) -> None:
    with PalaestraEnvironment(server_address, "tools/shop") as environment:
        episode = environment()
        public = {name for name in dir(type(episode)) if not name.startswith("_")}
        offered = {name for name in public if callable(getattr(type(episode), name))} - {"reset"}
        assert offered == {tool["function"]["name"] for tool in environment.tools}
        assert len(offered) >= 5
        for tool in environment.tools:  # every tool's schema survives TRL's docstring route
            seen = get_json_schema(getattr(episode, tool["function"]["name"]))["function"]
            wanted = tool["function"]
            assert seen["parameters"].get("required", []) == wanted["parameters"].get("required", [])
            assert set(seen["parameters"]["properties"]) == set(wanted["parameters"]["properties"])
        text = episode.reset(seed=1)
        assert "@example.com" in text
        reply = episode.find_customer(email="nobody@example.com")
        assert reply and "infrastructure" not in reply


def test_reset_refuses_plain_string_prompts(server_address: str) -> None:
    with (
        PalaestraEnvironment(server_address, "math/arithmetic") as environment,
        pytest.raises(ValueError, match="conversational prompts"),
    ):
        environment().reset(seed=1, prompt="Solve this.")


def test_rewards_through_the_server_and_closing_closes_episodes(server_address: str) -> None:
    with PalaestraEnvironment(server_address, "echo/text", {"turns": 1}) as environment:
        right, wrong, left_open = environment(), environment(), environment()
        word = right.reset(seed=3).split("'")[1]
        wrong.reset(seed=3)
        left_open.reset(seed=4)
        rewards = palaestra_reward([word, [{"role": "assistant", "content": "nothing"}]], [right, wrong])
        assert rewards == [1.0, 0.0]
        assert right.components == {"said_word": 1.0}
        open_id = left_open._episode.episode_id
    assert open_id is not None
    with Client(server_address) as client, pytest.raises(Exception, match=r"NOT_FOUND|not found|unknown"):
        client.step(open_id, "late")


def test_token_and_tls_reach_the_server(start_server: Any, tls_certificate: tuple[Path, Path]) -> None:
    cert, key = tls_certificate
    server = start_server(host="localhost", auth_token="s3cret", tls_cert=str(cert), tls_key=str(key))
    address = f"localhost:{server.server.port}"
    with pytest.raises(Exception, match="UNAUTHENTICATED"):
        PalaestraEnvironment(address, "echo/text", tls_root_cert=str(cert))
    with PalaestraEnvironment(
        address, "echo/text", {"turns": 1}, token="s3cret", tls_root_cert=str(cert)
    ) as environment:
        episode = environment()
        word = episode.reset(seed=5).split("'")[1]
        assert palaestra_reward([word], [episode]) == [1.0]


def _train(server_address: str, env_id: str, tmp_path: Path, steps: int = 2) -> tuple[Any, list[Any]]:
    tokenizer = qwen_style_tokenizer()
    model = build_model(tokenizer, hidden_size=32, layers=1, heads=2, max_positions=2048)
    seen: list[Any] = []

    def reward(completions: list[Any], environments: list[PalaestraEpisode], **kwargs: Any) -> Any:
        seen.append(list(environments))
        return palaestra_reward(completions, environments, **kwargs)

    environment = PalaestraEnvironment(server_address, env_id)
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=24,
        max_steps=steps,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        max_tool_calling_iterations=2,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"seed": list(range(8))}),
        processing_class=tokenizer,
        environment_factory=environment,
    )
    try:
        trainer.train()
    finally:
        environment.close()
    return trainer, seen


@pytest.mark.timeout(600)
@pytest.mark.parametrize("env_id", ["math/arithmetic", "math/arithmetic-tools"])
def test_grpo_trainer_runs_steps_on_palaestra_episodes(
    server_address: str, env_id: str, tmp_path: Path
) -> None:
    trainer, seen = _train(server_address, env_id, tmp_path)
    assert trainer.state.global_step == 2
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logged) == 2
    assert seen and all(len(batch) == 4 for batch in seen)
    # every rollout really was a Palaestra episode that got an answer and a reward
    for batch in seen:
        for episode in batch:
            assert episode.reward is not None
            assert episode._episode.episode_id is None  # answered and closed
    tools = {tool.__name__ for tool in trainer.tools}
    assert tools == ({"python"} if env_id.endswith("tools") else set())


def test_a_tool_call_parsed_by_trl_runs_on_the_server(server_address: str) -> None:
    """What TRL's tool loop does with a generated call: parse it with the tokenizer's response schema,
    then call the episode's method with the parsed arguments."""
    tokenizer = add_response_schema(qwen_style_tokenizer())
    with PalaestraEnvironment(server_address, "tools/shop") as environment:
        episode = environment()
        email = re.search(r"[a-z.]+@example\.com", episode.reset(seed=1)).group(0)  # type: ignore[union-attr]
        call_json = json.dumps({"name": "find_customer", "arguments": {"email": email}})
        text = f"<tool_call>\n{call_json}\n</tool_call><|im_end|>"
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prefix = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        [call] = parse_response(tokenizer, ids, prefix=prefix)["tool_calls"]
        function = call["function"]
        reply = getattr(episode, function["name"])(**function["arguments"])
        assert email.split("@")[0].split(".")[0] in reply.lower()
        assert episode.components.get("invalid_tool_call", 0.0) == 0.0


def test_an_infrastructure_failure_is_no_reward(start_server: Any) -> None:
    server = start_server(
        plugin_modules=["plugin_for_tests"], disabled_plugins=["code", "math", "games", "tools"]
    )
    with PalaestraEnvironment(server.address, "test/broken-verifier") as environment:
        episode = environment()
        episode.reset(seed=1)
        assert palaestra_reward(["an answer"], [episode]) == [None]  # TRL leaves the sample unscored
