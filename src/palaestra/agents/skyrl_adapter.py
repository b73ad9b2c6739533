"""Palaestra environments as SkyRL-Gym text environments (SkyRL's `skyrl_gym.envs.BaseTextEnv`).

SkyRL makes one environment object per trajectory with `skyrl_gym.make(env_class, env_config=...,
extras=...)`: `env_config` is the `environment.skyrl_gym.<env_class>` section of the SkyRL config, `extras`
the dataset row's extra fields. It calls `init(prompt)` for the opening conversation, then
`step(model_output)` with the model's raw text after every turn, until `done`.

`PalaestraTextEnv` drives one Palaestra episode that way:

* `env_config`: `address`, `env_id`, and optionally `token`, `tls_root_cert` and `options`
  (environment options); a row may choose its own `env_id`, `seed` and `task` through `extras`
  (top level or under `extra_info`);
* `init(prompt)` opens the episode and returns its opening messages instead of the row's prompt (the
  environment owns the task; the dataset's `prompt` column is only a placeholder). When the environment
  has tools, their JSON schemas and the calling convention (`<tool_call>{"name": ..., "arguments":
  {...}}</tool_call>`, as Qwen and Hermes models write them) are added to the system message;
* `step(text)` turns `<tool_call>` blocks into tool calls (any other text is a plain reply) and returns
  the environment's new messages (role `tool` for tool results), the step's reward (the weighted sum of
  its components) and whether the episode ended;
* an infrastructure failure raises `PalaestraInfraError`: SkyRL has no way to drop a sample, and
  reporting reward 0 would train the policy on a fault it did not cause.

All environments of a process share one client per connection (`text_episode.Connection`). Register the
class with `register()` (id `palaestra`), then set `environment.env_class=palaestra` in SkyRL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput

from palaestra.agents.text_episode import Connection, TextEpisode, tool_instructions
from palaestra.agents.tokens import message_to_template, parse_assistant_text
from palaestra.types import Message

ENV_ID = "palaestra"


class PalaestraInfraError(RuntimeError):
    """The server's infrastructure failed during an episode (not the policy's doing)."""


class PalaestraTextEnv(BaseTextEnv):  # type: ignore[misc]
    """One Palaestra episode as a SkyRL-Gym text environment."""

    def __init__(self, env_config: Any = None, extras: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        config = dict(env_config or {})
        row = dict(extras or {})
        row_info = dict(row.get("extra_info") or {})
        env_id = row.get("env_id") or row_info.get("env_id") or config.get("env_id")
        if not config.get("address") or not env_id:
            raise ValueError(
                "PalaestraTextEnv needs env_config with 'address' and 'env_id' "
                "(a row may set 'env_id' in extras)"
            )
        connection = Connection.of(
            {k: config[k] for k in ("address", "token", "tls_root_cert") if k in config}
        )
        options = config.get("options")
        self.episode = TextEpisode(
            connection.shared_client(), str(env_id), dict(options) if options else None
        )
        self.seed = row.get("seed", row_info.get("seed"))
        self.task = row.get("task", row_info.get("task"))
        self.max_turns = int(config.get("max_turns", 0)) or 10**9

    def init(self, prompt: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        opening = self.episode.open(seed=self.seed, task=self.task)
        self._raise_on_failure()
        messages = [message_to_template(m) for m in opening]
        if self.episode.tools:
            instructions = tool_instructions(self.episode.tools)
            if messages and messages[0]["role"] == "system":
                messages[0]["content"] = f"{messages[0]['content']}\n\n{instructions}"
            else:
                messages.insert(0, {"role": "system", "content": instructions})
        return messages, {"episode_id": self.episode.episode_id}

    def step(self, action: str) -> BaseTextEnvStepOutput:
        self.turns += 1
        message: Message = parse_assistant_text(action)
        new = self.episode.send(message)
        self._raise_on_failure()
        done = self.episode.done or self.turns >= self.max_turns
        return BaseTextEnvStepOutput(
            observations=[] if done else [message_to_template(m) for m in new],
            reward=self.episode.last_reward,
            done=done,
            metadata={"components": dict(self.episode.components)},
            postprocessed_action=None,
        )

    def get_metrics(self) -> dict[str, Any]:
        return {"turns": self.turns, "return": self.episode.reward, **self.episode.components}

    def close(self) -> None:
        self.episode.close()

    def _raise_on_failure(self) -> None:
        failure = self.episode.infra_failure
        if failure is not None:
            self.episode.close()
            raise PalaestraInfraError(f"{self.episode.env_id}: {failure.source}: {failure.message}")


def register(env_id: str = ENV_ID) -> None:
    """Make `skyrl_gym.make(env_id, ...)` build a `PalaestraTextEnv` (idempotent)."""
    import skyrl_gym

    if env_id not in skyrl_gym.registry:
        skyrl_gym.register(id=env_id, entry_point=f"{__name__}:PalaestraTextEnv")
