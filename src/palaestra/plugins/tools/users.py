"""Simulated users: scripted from the task (deterministic) or a model behind an OpenAI-compatible endpoint."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from palaestra.env import InfraError
from palaestra.plugins.tools.tasks import Task
from palaestra.rewards.checklist import ChatEndpoint, ChatEndpointError
from palaestra.types import Message

STOP_TOKEN = "###STOP###"
GOODBYE = "Thank you, that is all I needed."


class SimulatedUser(abc.ABC):
    @abc.abstractmethod
    async def opening(self) -> str:
        """The first user message."""

    @abc.abstractmethod
    async def respond(self, transcript: Sequence[Message]) -> str | None:
        """The next user message after the agent's reply, or None when the user is done."""


class ScriptedUser(SimulatedUser):
    """Says the task's turns in order, one after each agent reply, then stops."""

    def __init__(self, task: Task) -> None:
        self.turns = task.turns
        self.index = 0

    async def opening(self) -> str:
        return self.turns[0]

    async def respond(self, transcript: Sequence[Message]) -> str | None:
        self.index += 1
        return self.turns[self.index] if self.index < len(self.turns) else None


USER_SYSTEM_PROMPT = (
    "You play a customer talking to a support assistant. Your goal:\n{instructions}\n\n"
    "Say one short message at a time, give details only when they are needed, never invent facts that are "
    "not in your goal, and do not play the assistant. When your goal is reached or cannot be reached, "
    f"answer exactly {STOP_TOKEN}."
)


class ModelUser(SimulatedUser):
    """A model plays the user from the task's instructions. Endpoint failures are infrastructure failures."""

    def __init__(self, task: Task, endpoint: ChatEndpoint, max_turns: int = 8) -> None:
        self.endpoint = endpoint
        self.system = USER_SYSTEM_PROMPT.format(instructions=task.instructions)
        self.max_turns = max_turns
        self.turns = 0

    async def opening(self) -> str:
        text = await self._ask([])
        return text or "Hello."

    async def respond(self, transcript: Sequence[Message]) -> str | None:
        self.turns += 1
        if self.turns >= self.max_turns:
            return None
        text = await self._ask(transcript)
        return None if STOP_TOKEN in text else text

    async def _ask(self, transcript: Sequence[Message]) -> str:
        # Roles are mirrored: the assistant's replies are the model's "user" input.
        messages = [{"role": "system", "content": self.system}]
        for m in transcript:
            if m.role == "assistant" and m.content and not m.tool_calls:
                messages.append({"role": "user", "content": m.content})
            elif m.role == "user":
                messages.append({"role": "assistant", "content": m.content})
        if len(messages) == 1:
            messages.append({"role": "user", "content": "Hello, how can I help you today?"})
        try:
            return (await self.endpoint.complete(messages)).strip()
        except ChatEndpointError as exc:
            raise InfraError("simulated-user", str(exc)) from exc
