"""Use Palaestra environments from TRL's `GRPOTrainer` (its `environment_factory` hook, TRL >= 1.0).

TRL's environment mode: `environment_factory` is a callable with no arguments that returns an environment
object. TRL makes a pool of them, calls `reset(**row)` with the dataset row's columns before each rollout
(the returned text is appended to the last prompt message), offers every public method except `reset` and
`get_reward` to the model as a tool (its schema read from type hints and a Google-style docstring), and
passes the objects to reward functions as the `environments` keyword argument.

`PalaestraEnvironment(address, env_id, ...)` is such a factory for one Palaestra environment:

* `reset(seed=..., task=...)` opens an episode and returns its opening messages (system prompt and task)
  as text;
* each tool the environment announces becomes a method of the same name, arguments, types, required
  arguments, enum choices and descriptions, so the model sees exactly the environment's tools (JSON
  Schema keywords TRL's tool schemas cannot carry, such as `minItems`, are checked by the environment);
  the episode object has no other public method;
* `palaestra_reward(completions, environments)` sends each rollout's final assistant text as its answer
  and returns the episode's reward (the sum of its step rewards). An episode whose infrastructure failed
  returns None, which TRL treats as "no reward for this sample", never as 0.

All episode objects of one factory share one client (one gRPC channel and Session stream); `close()` (or
leaving a `with` block) closes the open episodes and the client. A bearer token and a TLS root
certificate are passed through to the client.

Prompts: TRL appends the text `reset` returns to the last message of the row's `prompt`, which must be a
list of chat messages. A dataset with only a `seed` column (and optionally `task`) is enough: TRL then
starts from one empty user message, which the episode's opening text fills. Plain-string prompts are
refused with a ValueError, because TRL cannot append an environment's opening text to them.

```python
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from palaestra.agents.trl_adapter import PalaestraEnvironment, palaestra_reward

with PalaestraEnvironment("127.0.0.1:50051", "math/arithmetic-tools", token=TOKEN) as environment:
    trainer = GRPOTrainer(
        model="Qwen/Qwen3-0.6B",
        train_dataset=Dataset.from_dict({"seed": list(range(1000))}),
        reward_funcs=palaestra_reward,
        environment_factory=environment,
        args=GRPOConfig(...),
    )
    trainer.train()
```
Each tool call is one step of the Palaestra episode (TRL calls the tools of one turn one by one). TRL
itself is an optional extra (`pip install palaestra[trl]`); this module does not import it.
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from palaestra.agents.text_episode import Connection, TextEpisode, messages_text

_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": dict[str, Any],
}
# Names TRL gives a meaning of its own, or does not offer as tools.
_RESERVED = {"reset", "get_reward"}


class PalaestraEpisode:
    """One Palaestra episode, driven the way TRL drives an environment object.

    Its only public methods are `reset` and the environment's tools (added by `PalaestraEnvironment`).
    """

    def __init__(self, episode: TextEpisode) -> None:
        self._episode = episode

    def reset(
        self, seed: int | None = None, task: int | str | None = None, prompt: Any = None, **row: Any
    ) -> str:
        if isinstance(prompt, str):
            raise ValueError(
                "TRL's environment mode needs conversational prompts: make the dataset's `prompt` column "
                "a list of chat messages, e.g. [{'role': 'user', 'content': ''}], or leave it out (a `seed` "
                "column is enough); the episode's opening text is appended to the last message"
            )
        return messages_text(self._episode.open(seed=seed, task=task))

    @property
    def reward(self) -> float | None:
        return self._episode.reward

    @property
    def components(self) -> dict[str, float]:
        return self._episode.components

    def _finish(self, answer: str) -> float | None:
        """Send the final answer (if the episode still runs); the episode's reward, None after a failure."""
        if self._episode.episode_id is not None and not self._episode.done:
            self._episode.answer(answer)
        self._episode.close()
        return self._episode.reward


class PalaestraEnvironment:
    """A TRL `environment_factory` for `env_id` served at `address`: call it for a new episode object."""

    def __init__(
        self,
        address: str,
        env_id: str,
        options: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        tls_root_cert: str | None = None,
    ) -> None:
        self.env_id = env_id
        self.options = dict(options or {})
        self.client = Connection(address, token, tls_root_cert).client()
        self._episodes: list[TextEpisode] = []
        self._lock = threading.Lock()
        probe = TextEpisode(self.client, env_id, self.options)  # one episode tells which tools it offers
        try:
            probe.open(seed=0)
            if probe.infra_failure is not None:
                raise RuntimeError(f"{env_id}: the probe episode failed: {probe.infra_failure.message}")
        except BaseException:
            probe.close()
            self.client.close_client()
            raise
        probe.close()
        self.tools = probe.tools
        attributes: dict[str, Any] = {"__doc__": f"A {env_id} episode on a Palaestra server."}
        for schema in self.tools:
            method = tool_method(schema)
            attributes[method.__name__] = method
        name = "Palaestra_" + "".join(c if c.isalnum() else "_" for c in env_id)
        self.episode_class: type[PalaestraEpisode] = type(name, (PalaestraEpisode,), attributes)

    def __call__(self) -> PalaestraEpisode:
        episode = TextEpisode(self.client, self.env_id, self.options)
        with self._lock:
            self._episodes.append(episode)
        return self.episode_class(episode)

    def close(self) -> None:
        """Close the episodes still open, then the client."""
        with self._lock:
            episodes, self._episodes = self._episodes, []
        open_ids = [e.episode_id for e in episodes if e.episode_id is not None]
        if open_ids:
            self.client.close([i for i in open_ids if i is not None])
        self.client.close_client()

    def __enter__(self) -> PalaestraEnvironment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tool_method(schema: Mapping[str, Any]) -> Any:
    """A method with the signature, type hints and Google-style docstring TRL reads a tool schema from."""
    function = schema.get("function", schema)
    name = str(function["name"])
    if name in _RESERVED or name.startswith("_") or not name.isidentifier():
        raise ValueError(
            f"the environment's tool {name!r} cannot be a TRL tool: TRL needs a Python identifier "
            f"that does not start with '_' and is none of {sorted(_RESERVED)}"
        )
    parameters_schema = function.get("parameters") or {}
    properties: dict[str, Any] = parameters_schema.get("properties", {})
    required = set(parameters_schema.get("required", []))

    def tool(self: PalaestraEpisode, **arguments: Any) -> str:
        sent = {key: value for key, value in arguments.items() if key in required or value is not None}
        return self._episode.call_tool(name, sent)

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {"return": str}
    lines = [function.get("description") or name.replace("_", " "), ""]
    if properties:
        lines.append("Args:")
    for argument, spec in properties.items():
        if not argument.isidentifier():
            raise ValueError(f"tool {name!r}: argument {argument!r} is not a Python identifier")
        annotation = _annotation(spec)
        default: Any = inspect.Parameter.empty
        if argument not in required:
            annotation, default = annotation | None, None
        annotations[argument] = annotation
        parameters.append(
            inspect.Parameter(
                argument, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
        description = " ".join(str(spec.get("description") or argument.replace("_", " ")).split())
        if "enum" in spec:
            description += f" (choices: {json.dumps(spec['enum'])})"
        lines.append(f"    {argument}: {description}")
    lines += ["", "Returns:", "    The tool's output."]
    tool.__name__ = tool.__qualname__ = name
    tool.__signature__ = inspect.Signature(parameters, return_annotation=str)  # type: ignore[attr-defined]
    tool.__annotations__ = annotations
    tool.__doc__ = "\n".join(lines)
    return tool


def _annotation(spec: Mapping[str, Any]) -> Any:
    kind = spec.get("type", "string")
    if isinstance(kind, list):  # e.g. ["string", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "array":
        return list[_annotation(spec.get("items") or {})]  # type: ignore[misc]
    return _JSON_TYPES.get(kind, str)


def palaestra_reward(
    completions: Sequence[Any], environments: Sequence[PalaestraEpisode], **_: Any
) -> list[float | None]:
    """TRL reward function: the final assistant text is the answer; the reward is the episode's return."""
    return [env._finish(_final_text(c)) for c, env in zip(completions, environments, strict=True)]


def _final_text(completion: Any) -> str:
    """The last assistant message's text (a completion is text, or a list of chat messages)."""
    if isinstance(completion, str):
        return completion
    for message in reversed(list(completion)):
        if message.get("role") == "assistant":
            content = message.get("content") or ""
            if isinstance(content, list):  # content parts
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
    return ""
