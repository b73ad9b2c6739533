"""The one OpenAI-compatible chat client (`POST {base_url}/chat/completions` over httpx).

Used by the server side (simulated users, LLM judges: endpoints named in the server's ``[llm.NAME]``
config tables, which clients may only pick by name) and by agents (`OpenAIChatPolicy` for evaluation).
It imports nothing from the server, the plugins or the agents, so every layer may use it.

```toml
[llm.judge]
base_url = "http://127.0.0.1:8000/v1"
model = "qwen"
api_key_env = "JUDGE_KEY"   # read from the server's own environment; never sent by a client
timeout_s = 30
```
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

ENDPOINT_KEYS = {"base_url", "model", "api_key", "api_key_env", "timeout_s", "temperature", "max_tokens"}


class ChatEndpointError(RuntimeError):
    """The chat endpoint failed: HTTP error, timeout, or an answer of the wrong shape."""


@dataclass
class ChatEndpoint:
    """An OpenAI-compatible chat completions endpoint (vLLM, SGLang, llama.cpp, a hosted API)."""

    base_url: str  # e.g. http://localhost:8000/v1
    model: str = "default"
    api_key: str = ""
    timeout_s: float = 30.0
    temperature: float = 0.0
    max_tokens: int | None = None
    # The HTTP client; made on first use (one per event loop). Tests may set one with a mock transport.
    http: httpx.AsyncClient | None = field(default=None, repr=False, compare=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_config(cls, table: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ChatEndpoint:
        """An endpoint from an operator's config table; `api_key_env` names a variable of THIS process."""
        unknown = set(table) - ENDPOINT_KEYS
        if unknown:
            raise ValueError(f"unknown chat endpoint keys {sorted(unknown)}; known: {sorted(ENDPOINT_KEYS)}")
        if not isinstance(table.get("base_url"), str):
            raise ValueError("a chat endpoint needs base_url (e.g. http://127.0.0.1:8000/v1)")
        environ = os.environ if environ is None else environ
        key = str(table.get("api_key", "")) or environ.get(str(table.get("api_key_env", "")), "")
        max_tokens = table.get("max_tokens")
        return cls(
            base_url=str(table["base_url"]),
            model=str(table.get("model", "default")),
            api_key=key,
            timeout_s=float(table.get("timeout_s", 30.0)),
            temperature=float(table.get("temperature", 0.0)),
            max_tokens=int(max_tokens) if max_tokens is not None else None,
        )

    def _client(self) -> httpx.AsyncClient:
        import httpx  # imported here: only configured judges, simulated users and evaluations need it

        loop = asyncio.get_running_loop()
        if self.http is None or (self._loop is not None and self._loop is not loop):
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self.http = httpx.AsyncClient(
                base_url=self.base_url.rstrip("/"), headers=headers, timeout=self.timeout_s
            )
            self._loop = loop
        return self.http

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        json_mode: bool = False,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """The first choice's assistant message (content, tool_calls); ChatEndpointError on failure."""
        import httpx

        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.temperature if temperature is None else temperature,
        }
        limit = max_tokens if max_tokens is not None else self.max_tokens
        if limit is not None:
            body["max_tokens"] = limit
        if tools:
            body["tools"] = list(tools)
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        try:
            response = await self._client().post("/chat/completions", json=body)
            response.raise_for_status()
            message = response.json()["choices"][0]["message"]
        except httpx.TimeoutException as exc:
            raise ChatEndpointError(f"timed out after {self.timeout_s} s") from exc
        except httpx.HTTPError as exc:
            raise ChatEndpointError(f"HTTP failure: {exc}") from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ChatEndpointError(f"malformed chat completion: {exc}") from exc
        if not isinstance(message, dict):
            raise ChatEndpointError(f"malformed chat completion: message is {type(message).__name__}")
        return message

    async def complete(self, messages: Sequence[Mapping[str, Any]], json_mode: bool = False) -> str:
        """The assistant's text for `messages`; raises ChatEndpointError on any failure."""
        return str((await self.chat(messages, json_mode=json_mode)).get("content") or "")

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None


def endpoints_from_config(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, ChatEndpoint]:
    """The server's named endpoints from its ``[llm.NAME]`` tables."""
    return {name: ChatEndpoint.from_config(table) for name, table in tables.items()}


def named_endpoint(endpoints: Mapping[str, ChatEndpoint], name: Any, what: str) -> ChatEndpoint:
    """The endpoint a client picked by name; ValueError (INVALID_ARGUMENT) for anything but a known name."""
    if not isinstance(name, str):
        raise ValueError(
            f"{what} must name one of the server's chat endpoints "
            f"({sorted(endpoints) or 'none configured'}); clients cannot send URLs or keys"
        )
    if name not in endpoints:
        raise ValueError(
            f"{what} {name!r} is not a chat endpoint of this server; known: {sorted(endpoints) or 'none'}"
        )
    return endpoints[name]
