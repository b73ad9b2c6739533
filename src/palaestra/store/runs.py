"""Tagging the episodes of a run (an evaluation, a training job, a person's session) in a store.

The server records every episode by itself; a run only adds who ran it and why, keyed by episode id, so
tags may be written before or after the server has written the episodes::

    from palaestra.store.runs import RunRecorder

    with RunRecorder("trajectories.sqlite", kind="eval", model="qwen2.5-0.5b", tags={"step": 1200}) as run:
        group = client.open("math/arithmetic", seed=7, count=8)
        run.add(e.episode_id for e in group)
        ...

The file must be the one the server writes (`[store] path`): the same machine, for example an embedded
server (`ServerThread(ServerConfig(store={"path": ...}))`, or `--store` on commands that start one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from palaestra.store.db import TrajectoryStore


class RunRecorder:
    def __init__(
        self,
        path: str | Path,
        kind: str,
        model: str = "",
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.store = TrajectoryStore(path)
        self.run_id = self.store.start_run(kind, model, tags, run_id)

    def add(self, episode_ids: Iterable[str]) -> None:
        self.store.add_run_episodes(self.run_id, list(episode_ids))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
