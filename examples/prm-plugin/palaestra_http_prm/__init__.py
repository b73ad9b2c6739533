"""An example plugin: a process reward model (PRM) behind an HTTP endpoint.

It registers one reward function (default name `http_prm`) with the contract the math environments
expect: `prm(problem, steps) -> list[float]`, one score in [0, 1] per step. Two wire formats:

* ``protocol = "json"`` - POST ``{"problem": ..., "steps": [...]}`` to ``endpoint``; the reply is
  ``{"scores": [...]}``.
* ``protocol = "openai"`` - ask an OpenAI-compatible chat endpoint (``endpoint`` is its base URL, e.g.
  ``http://127.0.0.1:8000/v1``; a URL ending in ``/chat/completions`` works too) to rate every step, through
  Palaestra's one chat client (`palaestra.llm.ChatEndpoint`); the reply's content must be a JSON list of
  numbers.

Configure it in the server config and name it in a math environment:

    [plugins.http_prm]
    endpoint = "http://127.0.0.1:8000/score"
    protocol = "json"
    timeout_s = 20

    [plugins.math]
    prm = "http_prm"

Nothing is downloaded: the JSON protocol uses the standard library, the chat protocol `palaestra.llm`.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from palaestra import hookimpl
from palaestra.llm import ChatEndpoint

_RATE_PROMPT = (
    "You grade solutions step by step. For each numbered step, give the probability (0 to 1) that the step "
    "is correct. Reply with a JSON list of numbers only, one per step."
)


def _post_json(url: str, body: dict[str, Any], timeout_s: float, headers: Mapping[str, str]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def make_prm(config: Mapping[str, Any]) -> Callable[..., Any]:
    """The reward function: synchronous for the JSON protocol, a coroutine function for the chat one."""
    endpoint = str(config["endpoint"])
    protocol = str(config.get("protocol", "json"))
    timeout_s = float(config.get("timeout_s", 20))
    if protocol == "json":
        headers = {"Authorization": f"Bearer {config['api_key']}"} if config.get("api_key") else {}

        def prm(problem: str, steps: list[str]) -> list[float]:
            reply = _post_json(endpoint, {"problem": problem, "steps": steps}, timeout_s, headers)
            return [float(s) for s in reply["scores"]]

        return prm
    if protocol != "openai":
        raise ValueError(f"protocol must be 'json' or 'openai', not {protocol!r}")
    chat = ChatEndpoint(
        base_url=endpoint.removesuffix("/chat/completions"),
        model=str(config.get("model", "prm")),
        api_key=str(config.get("api_key", "")),
        timeout_s=timeout_s,
    )

    async def rate(problem: str, steps: list[str]) -> list[float]:
        numbered = "\n".join(f"Step {i + 1}: {step}" for i, step in enumerate(steps))
        messages = [
            {"role": "system", "content": _RATE_PROMPT},
            {"role": "user", "content": f"Problem: {problem}\n\n{numbered}"},
        ]
        return [float(s) for s in json.loads(await chat.complete(messages))]

    return rate


@hookimpl
def palaestra_register_reward_functions(registry: Any, config: Mapping[str, Any]) -> None:
    if "endpoint" not in config:
        return  # not configured on this server: register nothing rather than a function that cannot work
    name = str(config.get("name", "http_prm"))
    registry.add(name, make_prm(config), f"process reward model at {config['endpoint']}")
