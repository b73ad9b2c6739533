"""The TRL adapter: an `environment_factory` class and a reward function over a real server."""

from __future__ import annotations

import pytest

from palaestra.agents.trl_adapter import (
    PalaestraEpisode,
    _tool_method,
    palaestra_environment,
    palaestra_reward,
)

PYTHON_TOOL = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run a Python program.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The program."}},
            "required": ["code"],
        },
    },
}


def test_environment_tools_become_methods_with_the_schema_trl_reads() -> None:
    get_json_schema = pytest.importorskip("transformers.utils").get_json_schema
    method = _tool_method(PYTHON_TOOL)
    bound = type("WithTool", (PalaestraEpisode,), {"python": method})
    schema = get_json_schema(bound.python)
    assert schema["function"]["name"] == "python"
    assert schema["function"]["parameters"]["properties"]["code"]["type"] == "string"
    assert schema["function"]["parameters"]["required"] == ["code"]


def test_reset_and_reward_through_the_server(server_address: str) -> None:
    factory = palaestra_environment(server_address, "echo/text", {"turns": 1})
    right, wrong = factory(), factory()
    prompt = right.reset(seed=3)
    wrong.reset(seed=3)
    word = prompt.split("'")[1]
    assert "say the word" in prompt
    rewards = palaestra_reward([word, [{"role": "assistant", "content": "nothing"}]], [right, wrong])
    assert rewards == [1.0, 0.0]
    assert right.components == {"said_word": 1.0}
    for env in (right, wrong):
        env.client.close_client()
