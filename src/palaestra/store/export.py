"""Exporting recorded episodes: Parquet files, and Hugging Face datasets for SFT and preference tuning.

- `conversation(record, agent)`: an episode as one chat, in order: what the agent saw (system, user and
  tool messages) and what it did (assistant messages with their tool calls; text and discrete actions
  become assistant text).
- `sft_records`: one record per episode and agent, ``{"messages", "reward", ...}`` (TRL's conversational
  format), optionally only episodes at or above a reward.
- `preference_pairs`: from each group of episodes opened together (a GRPO group: same task, same seed),
  the best episode against the worst (or every better/worse pair), ``{"prompt", "chosen", "rejected"}``:
  prompt is what both saw before the first action, chosen and rejected the rest.
- `to_parquet` / `to_dataset`: write or build them (pyarrow and `datasets` are imported on use:
  ``pip install palaestra[store]``).

Episodes that ended with an infrastructure failure are never exported as training data.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from palaestra.store.db import TrajectoryStore


def _message(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A chat message in a fixed shape (Arrow needs one schema for every row)."""
    return {
        "role": str(raw.get("role", "")),
        "content": str(raw.get("content", "")),
        "name": str(raw.get("name", "")),
        "tool_calls": [
            {
                "id": str(c.get("id", "")),
                "name": str(c.get("name", "")),
                "arguments": str(c.get("arguments", "")),
            }
            for c in raw.get("tool_calls", [])
        ],
        "tool_call_id": str(raw.get("tool_call_id", "")),
    }


def _action_message(action: Any) -> dict[str, Any]:
    if isinstance(action, Mapping):
        return _message({**action, "role": "assistant"})
    return _message({"role": "assistant", "content": "" if action is None else str(action)})


def agents_of(record: Mapping[str, Any]) -> list[str]:
    return [a["agent"] for a in record["agents"]]


def conversation(record: Mapping[str, Any], agent: str) -> tuple[list[dict[str, Any]], int]:
    """The agent's chat and the index of its first assistant message (len(chat) when it never acted)."""
    chat: list[dict[str, Any]] = []
    first_action = -1
    for entry in record["trajectory"]:
        actions = entry.get("actions") or {}
        if entry.get("step") == 0 and not actions and chat:
            chat = []  # a reset: the episode started again; keep the last attempt
            first_action = -1
        if agent in actions:
            if first_action < 0:
                first_action = len(chat)
            chat.append(_action_message(actions[agent]))
        for message in (entry.get("messages") or {}).get(agent, []):
            chat.append(_message(message))
    return chat, (first_action if first_action >= 0 else len(chat))


def _agent_return(record: Mapping[str, Any], agent: str) -> float:
    for summary in record["agents"]:
        if summary["agent"] == agent:
            return float(summary["return"])
    return 0.0


def _usable(record: Mapping[str, Any]) -> bool:
    return record.get("infra_source") is None


def sft_records(
    episodes: Iterable[Mapping[str, Any]], min_reward: float | None = None
) -> Iterator[dict[str, Any]]:
    """One record per (episode, agent that acted): the whole chat and its return."""
    for record in episodes:
        if not _usable(record):
            continue
        for agent in agents_of(record):
            chat, first = conversation(record, agent)
            reward = _agent_return(record, agent)
            if first >= len(chat) or (min_reward is not None and reward < min_reward):
                continue
            yield {
                "messages": chat,
                "reward": reward,
                "env_id": record["env_id"],
                "episode_id": record["episode_id"],
                "agent": agent,
                "seed": record["seed"],
            }


def preference_pairs(
    episodes: Iterable[Mapping[str, Any]], every_pair: bool = False
) -> Iterator[dict[str, Any]]:
    """Chosen/rejected pairs from the episodes of each group (episodes opened by one request), by return.

    Default: the best against the worst of each group and agent, when their returns differ. With
    `every_pair`, every pair with different returns.
    """
    groups: dict[tuple[str, str], list[tuple[float, list[dict[str, Any]], int, Mapping[str, Any]]]]
    groups = defaultdict(list)
    for record in episodes:
        if not _usable(record) or not record.get("group_id"):
            continue
        for agent in agents_of(record):
            chat, first = conversation(record, agent)
            if first < len(chat):
                groups[(record["group_id"], agent)].append(
                    (_agent_return(record, agent), chat, first, record)
                )
    for (group_id, agent), members in groups.items():
        members.sort(key=lambda m: -m[0])
        if every_pair:
            pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1 :] if a[0] > b[0]]
        else:
            pairs = [(members[0], members[-1])] if len(members) > 1 and members[0][0] > members[-1][0] else []
        for (r_chosen, chosen, first_c, rec_c), (r_rejected, rejected, first_r, rec_r) in pairs:
            yield {
                "prompt": chosen[:first_c],
                "chosen": chosen[first_c:],
                "rejected": rejected[first_r:],
                "score_chosen": r_chosen,
                "score_rejected": r_rejected,
                "env_id": rec_c["env_id"],
                "group_id": group_id,
                "agent": agent,
                "chosen_episode_id": rec_c["episode_id"],
                "rejected_episode_id": rec_r["episode_id"],
            }


def flat_rows(episodes: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """Episodes as flat rows for Parquet: summary columns, components as JSON, the trajectory as JSON."""
    for record in episodes:
        row = {key: value for key, value in record.items() if key not in ("agents", "options", "trajectory")}
        row["agents"] = json.dumps(record["agents"])
        row["options"] = json.dumps(record["options"])
        row["trajectory"] = json.dumps(record["trajectory"])
        yield row


def to_parquet(
    store: TrajectoryStore,
    path: str | Path,
    kind: str = "episodes",
    env_id: str | None = None,
    run_id: str | None = None,
    **options: Any,
) -> int:
    """Write `kind` ("episodes", "sft" or "preferences") records of the store to a Parquet file.

    Returns the number of rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(records(store, kind, env_id, run_id, **options))
    table = pa.Table.from_pylist(rows) if rows else pa.table({})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path))
    return len(rows)


def to_dataset(
    store: TrajectoryStore,
    kind: str = "sft",
    env_id: str | None = None,
    run_id: str | None = None,
    **options: Any,
) -> Any:
    """A `datasets.Dataset` of `kind` records ("sft", "preferences" or "episodes")."""
    import datasets

    return datasets.Dataset.from_list(list(records(store, kind, env_id, run_id, **options)))


def records(
    store: TrajectoryStore,
    kind: str,
    env_id: str | None = None,
    run_id: str | None = None,
    **options: Any,
) -> Iterator[dict[str, Any]]:
    episodes = store.iter_episodes(env_id=env_id, run_id=run_id)
    if kind == "episodes":
        return flat_rows(episodes)
    if kind == "sft":
        return sft_records(episodes, **options)
    if kind == "preferences":
        return preference_pairs(episodes, **options)
    raise ValueError(f"unknown export kind {kind!r}; expected episodes, sft or preferences")


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
            count += 1
    return count


__all__: Sequence[str] = (
    "conversation",
    "preference_pairs",
    "records",
    "sft_records",
    "to_dataset",
    "to_parquet",
    "write_jsonl",
)
