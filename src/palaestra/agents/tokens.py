"""Token-exact multi-turn transcripts.

Re-tokenizing a conversation at every turn drifts: the text the policy produced rarely tokenizes back
into the ids it sampled, so the trainer would score tokens the policy never chose. Here the policy's
sampled ids are kept exactly as they were; after each turn only the NEW environment messages are rendered
through the chat template (as a delta against a fixed stand-in conversation) and their ids appended.

`Transcript` records, for every token, whether the policy produced it (the loss mask) and the log-prob it
was sampled with; `turns` gives the span of each policy turn so rewards can be credited to the turn that
earned them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from palaestra.types import Message, ToolCall

# Stand-in history used to render a delta: the template's output for it is a fixed prefix we cut off.
_STAND_IN = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def message_to_template(message: Message) -> dict[str, Any]:
    """A palaestra Message as the dict shape Hugging Face chat templates expect (OpenAI style)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        out["name"] = message.name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    return out


def parse_assistant_text(text: str) -> Message:
    """Turn decoded policy text into an assistant message; `<tool_call>{json}</tool_call>` become tool calls.

    A call whose JSON does not parse stays in the content, so the environment sees (and can penalise)
    exactly what the model wrote.
    """
    calls: list[ToolCall] = []
    kept: list[str] = []
    position = 0
    for index, match in enumerate(_TOOL_CALL.finditer(text)):
        try:
            payload = json.loads(match.group(1))
            name = str(payload["name"])
        except (ValueError, KeyError, TypeError):
            continue
        arguments = payload.get("arguments", {})
        arguments_text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append(ToolCall(name=name, arguments=arguments_text, id=f"call_{index}"))
        kept.append(text[position : match.start()])
        position = match.end()
    kept.append(text[position:])
    return Message(role="assistant", content="".join(kept).strip(), tool_calls=calls)


@dataclass
class Transcript:
    """One episode's token sequence, with a loss mask and sampling log-probs per token."""

    ids: list[int] = field(default_factory=list)
    policy_mask: list[bool] = field(default_factory=list)
    sampled_logprobs: list[float] = field(default_factory=list)
    turns: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each policy turn

    def add_environment(self, ids: Sequence[int]) -> None:
        self.ids.extend(ids)
        self.policy_mask.extend([False] * len(ids))
        self.sampled_logprobs.extend([0.0] * len(ids))

    def add_policy(self, ids: Sequence[int], logprobs: Sequence[float] | None = None) -> None:
        start = len(self.ids)
        self.ids.extend(ids)
        self.policy_mask.extend([True] * len(ids))
        self.sampled_logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        self.turns.append((start, len(self.ids)))

    def __len__(self) -> int:
        return len(self.ids)


class ChatCodec:
    """Renders conversations through a tokenizer's chat template, first in full and then as deltas."""

    def __init__(self, tokenizer: Any, *, stop_tokens: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop_text: str = tokenizer.eos_token
        names = [self.stop_text, *stop_tokens]
        self.stop_ids: list[int] = sorted({int(tokenizer.convert_tokens_to_ids(name)) for name in names})
        self.turn_suffix = self._measure_turn_suffix()

    def render(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]], generation: bool
    ) -> str:
        text = self.tokenizer.apply_chat_template(
            list(messages), tools=list(tools) or None, tokenize=False, add_generation_prompt=generation
        )
        return str(text)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        """The first prompt: the environment's opening messages and the generation prompt."""
        return self.encode(self.render([message_to_template(m) for m in messages], tools, generation=True))

    def delta_ids(
        self, new_messages: Sequence[Message], tools: Sequence[dict[str, Any]] = (), *, policy_stopped: bool
    ) -> list[int]:
        """Ids to append after the policy's turn: (turn closer) + new messages + generation prompt.

        `policy_stopped` says whether the policy's sampled ids already end with the stop token; if the
        turn was cut by the token budget the closer is added here, so the transcript stays well formed.
        """
        base = self.render(_STAND_IN, tools, generation=False)
        full = self.render(
            [*_STAND_IN, *(message_to_template(m) for m in new_messages)], tools, generation=True
        )
        if not full.startswith(base):
            raise ValueError("the chat template does not render a conversation as a prefix of its extension")
        closer = self.turn_suffix if policy_stopped else self.stop_text + self.turn_suffix
        return self.encode(closer + full[len(base) :])

    def _measure_turn_suffix(self) -> str:
        """What the template writes after the stop token of an assistant turn (e.g. a newline)."""
        text = self.render(_STAND_IN, (), generation=False)
        at = text.rfind(self.stop_text)
        return text[at + len(self.stop_text) :] if at >= 0 else ""

    def decode_turn(self, ids: Sequence[int]) -> str:
        """The text of a policy turn without its stop token."""
        body = list(ids[:-1]) if ids and ids[-1] in self.stop_ids else list(ids)
        return str(self.tokenizer.decode(body, skip_special_tokens=False))
