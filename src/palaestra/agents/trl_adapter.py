"""Use Palaestra environments from TRL's `GRPOTrainer` (its `environment_factory` hook).

TRL's environment mode (see TRL's "OpenEnv integration" docs): `environment_factory` is a class with no
constructor arguments; TRL makes one instance per generation, calls `reset(**row)` with the dataset
row's columns (the returned text is appended to the prompt), exposes the instance's public methods as
tools (from their type hints and docstrings), and hands the instances to reward functions as the
`environments` keyword argument.

`palaestra_environment(address, env_id)` builds such a class for one Palaestra environment:

* `reset(seed=..., task=...)` opens an episode and returns its opening messages as text;
* every tool the environment announces (OpenAI schemas in its first observation) becomes a method that
  sends an assistant tool call and returns the tool's reply;
* `palaestra_reward(completions, environments)` sends each final completion as the answer, and returns
  the episode's reward (the weighted sum of its components). An episode whose infrastructure failed
  returns None, which TRL treats as "no reward for this sample" rather than a reward of 0.

```python
from trl import GRPOConfig, GRPOTrainer
from palaestra.agents.trl_adapter import palaestra_environment, palaestra_reward

trainer = GRPOTrainer(
    model="Qwen/Qwen3-0.6B",
    train_dataset=dataset,                      # columns: prompt, seed
    reward_funcs=palaestra_reward,
    environment_factory=palaestra_environment("127.0.0.1:50051", "math/arithmetic-tools"),
    args=GRPOConfig(...),
)
```
TRL itself is an optional extra (`pip install palaestra[trl]`); this module does not import it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from typing import Any

from palaestra.agents.client import Client
from palaestra.types import Action, EpisodeStep, Message, ToolCall, total_reward

_JSON_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}


class PalaestraEpisode:
    """One Palaestra episode driven the way TRL drives an environment object."""

    address: str = ""
    env_id: str = ""
    options: dict[str, Any] = {}

    def __init__(self) -> None:
        self.client = Client(self.address)
        self.episode_id: str | None = None
        self.reward: float | None = 0.0
        self.components: dict[str, float] = {}
        self.done = False

    def reset(self, seed: int | None = None, task: int | str | None = None, **row: Any) -> str:
        self._close()
        [step] = self.client.open(self.env_id, seed=seed, options=self.options or None, task=task)
        self.episode_id, self.reward, self.components, self.done = step.episode_id, 0.0, {}, False
        self._absorb(step)
        return _text(step)

    def finish(self, answer: str) -> float | None:
        """Send the final answer (if the episode still runs); the episode's reward, None after a failure."""
        if not self.done and self.episode_id is not None:
            self._absorb(self.client.step(self.episode_id, Action(text=answer)))
        self._close()
        return self.reward

    def _call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        if self.done or self.episode_id is None:
            return "The episode is over."
        call = ToolCall(name=name, arguments=json.dumps(arguments), id=f"call-{name}")
        step = self.client.step(self.episode_id, Action(message=Message("assistant", tool_calls=[call])))
        self._absorb(step)
        return _text(step)

    def _absorb(self, step: EpisodeStep) -> None:
        if step.infra_failure is not None:
            self.reward, self.done = None, True
            return
        result = step.result
        if self.reward is not None:
            self.reward += total_reward(result.components)
        for component in result.components:
            self.components[component.name] = self.components.get(component.name, 0.0) + component.value
        self.done = self.done or step.done

    def _close(self) -> None:
        if self.episode_id is not None:
            self.client.close([self.episode_id])
            self.episode_id = None


def _text(step: EpisodeStep) -> str:
    if step.infra_failure is not None:
        return f"[infrastructure failure: {step.infra_failure.message}]"
    return "\n\n".join(m.content for m in step.result.observation.messages if m.content)


def _tool_method(schema: dict[str, Any]) -> Any:
    """A method with the signature, type hints and Google-style docstring TRL reads tool schemas from."""
    function = schema.get("function", schema)
    name = function["name"]
    properties: dict[str, Any] = function.get("parameters", {}).get("properties", {})
    required = set(function.get("parameters", {}).get("required", []))

    def tool(self: PalaestraEpisode, **arguments: Any) -> str:
        return self._call_tool(name, arguments)

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {"return": str}
    for argument, spec in properties.items():
        annotations[argument] = _JSON_TYPES.get(spec.get("type", "string"), str)
        default = inspect.Parameter.empty if argument in required else None
        parameters.append(
            inspect.Parameter(
                argument, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotations[argument]
            )
        )
    tool.__name__ = tool.__qualname__ = name
    tool.__signature__ = inspect.Signature(parameters, return_annotation=str)  # type: ignore[attr-defined]
    tool.__annotations__ = annotations
    lines = [function.get("description", name), "", "Args:"]
    lines += [f"    {arg}: {spec.get('description', arg)}" for arg, spec in properties.items()]
    tool.__doc__ = "\n".join(lines) + "\n\nReturns:\n    The tool's output."
    return tool


def palaestra_environment(address: str, env_id: str, options: dict[str, Any] | None = None) -> type:
    """A TRL `environment_factory` class for `env_id` served at `address`; its tools become methods."""
    with Client(address) as client:  # one probe episode tells which tools the environment offers
        [first] = client.open(env_id, seed=0, options=options)
        tools = list(first.result.observation.tools) if first.infra_failure is None else []
        client.close([first.episode_id])
    attributes: dict[str, Any] = {"address": address, "env_id": env_id, "options": dict(options or {})}
    for schema in tools:
        method = _tool_method(schema)
        attributes[method.__name__] = method
    safe = env_id.replace("/", "_").replace("-", "_")
    return type(f"Palaestra_{safe}", (PalaestraEpisode,), attributes)


def palaestra_reward(
    completions: Sequence[Any], environments: Sequence[PalaestraEpisode], **_: Any
) -> list[float | None]:
    """TRL reward function: the final completion is the answer; the reward is the episode's return."""
    return [env.finish(_completion_text(c)) for c, env in zip(completions, environments, strict=True)]


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    # Conversational completions: a list of messages; the answer is the last assistant message.
    for message in reversed(list(completion)):
        if message.get("role") == "assistant" and message.get("content"):
            return str(message["content"])
    return ""
