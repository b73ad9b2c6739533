"""One Palaestra chat episode driven by a trainer's text and tool calls.

This is the core the trainer adapters share (TRL, verifiers, SkyRL): a trainer produces assistant text or
tool calls, the episode sends them to the server and hands back the environment's new messages, and keeps
the episode's reward. An episode whose infrastructure failed has `reward` None: trainers must drop such a
sample, never score it 0.

`Connection` says where the server is and how to authenticate (bearer token, TLS root certificate);
`Connection.shared_client()` gives one `Client` per connection for the whole process, so thousands of
episodes share one gRPC channel and one Session stream. Shared clients are closed at interpreter exit, or
earlier with `close_shared_clients()`.
"""

from __future__ import annotations

import atexit
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palaestra.agents.client import Client
from palaestra.types import Action, EpisodeStep, InfraFailure, Message, ToolCall


@dataclass(frozen=True)
class Connection:
    """Where a Palaestra server listens and how to authenticate to it."""

    address: str
    token: str | None = None
    tls_root_cert: str | None = None  # PEM file of the CA that signed the server's certificate

    def client(self) -> Client:
        """A new client of its own (the caller closes it)."""
        return Client(self.address, token=self.token, tls_root_cert=self.tls_root_cert)

    def shared_client(self) -> Client:
        """The process-wide client for this connection, opened on first use."""
        with _SHARED_LOCK:
            client = _SHARED.get(self)
            if client is None:
                client = _SHARED[self] = self.client()
            return client

    @classmethod
    def of(cls, value: Connection | Mapping[str, Any] | str) -> Connection:
        """Accept a Connection, an address, or a mapping with address/token/tls_root_cert."""
        if isinstance(value, Connection):
            return value
        if isinstance(value, str):
            return cls(value)
        unknown = set(value) - {"address", "token", "tls_root_cert"}
        if unknown or "address" not in value:
            raise ValueError(
                f"a Palaestra connection needs 'address' and optionally 'token' and 'tls_root_cert'; "
                f"got keys {sorted(value)}"
            )
        cert = value.get("tls_root_cert")
        return cls(str(value["address"]), value.get("token") or None, str(Path(cert)) if cert else None)


_SHARED: dict[Connection, Client] = {}
_SHARED_LOCK = threading.Lock()


def close_shared_clients() -> None:
    """Close every shared client (the server then closes the episodes they left open)."""
    with _SHARED_LOCK:
        clients = list(_SHARED.values())
        _SHARED.clear()
    for client in clients:
        client.close_client()


atexit.register(close_shared_clients)


class TextEpisode:
    """A chat episode on a Palaestra server, stepped with assistant text and tool calls.

    `open()` starts an episode (closing the previous one); `answer(text)` sends a plain assistant reply;
    `call_tool(name, arguments)` sends one tool call and returns the tool's reply. `reward` is the sum of
    the step rewards so far (None once the infrastructure failed), `components` the per-component sums,
    `done` whether the episode ended.
    """

    def __init__(self, client: Client, env_id: str, options: Mapping[str, Any] | None = None) -> None:
        self.client = client
        self.env_id = env_id
        self.options = dict(options or {})
        self.episode_id: str | None = None
        self.tools: list[dict[str, Any]] = []
        self.reward: float | None = 0.0
        self.last_reward = 0.0
        self.components: dict[str, float] = {}
        self.done = False
        self.infra_failure: InfraFailure | None = None
        self._calls = 0

    def open(self, seed: int | None = None, task: int | str | None = None) -> list[Message]:
        """Start a new episode; its opening messages (system prompt, task)."""
        self.close()
        [step] = self.client.open(self.env_id, seed=seed, options=self.options or None, task=task)
        self.episode_id = step.episode_id
        self.reward, self.last_reward, self.components, self.done = 0.0, 0.0, {}, False
        self.infra_failure, self._calls = None, 0
        self.tools = list(step.result.observation.tools) if step.infra_failure is None else []
        return self._absorb(step)

    def send(self, message: Message) -> list[Message]:
        """Send one assistant message; the environment's new messages."""
        if self.episode_id is None:
            raise RuntimeError("the episode is not open: call open() first")
        if self.done:
            return []
        action = Action(message=message) if message.tool_calls else Action(text=message.content)
        return self._absorb(self.client.step(self.episode_id, action))

    def answer(self, text: str) -> list[Message]:
        return self.send(Message("assistant", content=text))

    def call_tool(self, name: str, arguments: Mapping[str, Any] | str) -> str:
        """Send one tool call; the tool's reply as text (or why nothing ran)."""
        if self.done:
            return "The episode is over."
        self._calls += 1
        text = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
        call = ToolCall(name=name, arguments=text, id=f"call_{self._calls}")
        return messages_text(self.send(Message("assistant", tool_calls=[call])))

    def close(self) -> None:
        if self.episode_id is not None:
            episode_id, self.episode_id = self.episode_id, None
            self.client.close([episode_id])

    def _absorb(self, step: EpisodeStep) -> list[Message]:
        if step.infra_failure is not None:
            self.infra_failure, self.reward, self.last_reward, self.done = step.infra_failure, None, 0.0, True
            return [Message("user", f"[infrastructure failure: {step.infra_failure.message}]")]
        result = step.result
        self.last_reward = result.scalar_reward
        if self.reward is not None:
            self.reward += self.last_reward
        for component in result.components:
            self.components[component.name] = self.components.get(component.name, 0.0) + component.value
        self.done = self.done or step.done
        return list(result.observation.messages)


def messages_text(messages: list[Message]) -> str:
    """Messages' contents joined by blank lines (how a text-only trainer shows them to the model)."""
    return "\n\n".join(m.content for m in messages if m.content)


def tool_instructions(tools: list[dict[str, Any]]) -> str:
    """How the model is told about the environment's tools when the trainer passes only text."""
    schemas = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (
        "You can call these tools (JSON schemas):\n<tools>\n"
        f"{schemas}\n</tools>\n"
        'To call a tool, write <tool_call>{"name": <tool name>, "arguments": <JSON object>}</tool_call>. '
        "Reply without a tool call when you are done."
    )
