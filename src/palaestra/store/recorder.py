"""Recording finished episodes into the store without slowing the server down.

`StoreRecorder` is a plugin object: the server registers it when `[store] path` is set, and its
`palaestra_episode_finished` hook only appends the episode to a queue (no I/O, no encoding on the event
loop). A writer thread turns queued episodes into rows (JSON, zlib) and writes them in batches: at most
`batch_size` per transaction, at the latest `flush_interval_s` after the episode finished. Retention
runs in the same thread every `retention_interval_s`.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from palaestra.hookspecs import hookimpl
from palaestra.store.db import StoreSettings, TrajectoryStore, _jsonable, pack
from palaestra.types import EpisodeSummary

log = logging.getLogger("palaestra.store")

Pending = tuple[EpisodeSummary, Sequence[Mapping[str, Any]], Mapping[str, Any], float]


def episode_row(
    summary: EpisodeSummary,
    trajectory: Sequence[Mapping[str, Any]],
    info: Mapping[str, Any],
    finished_at: float,
) -> tuple[Any, ...]:
    """One row of the `episodes` table (ALL_COLUMNS order)."""
    agents = [
        {
            "agent": a.agent,
            "return": a.episode_return,
            "components": [
                {
                    "name": c.name,
                    "kind": c.kind.name.lower(),
                    "total": c.total,
                    "count": c.count,
                    "not_ok": c.not_ok,
                }
                for c in a.components
            ],
        }
        for a in summary.agents
    ]
    returns = [a.episode_return for a in summary.agents]
    failure = summary.infra_failure
    task = info.get("task")
    return (
        summary.episode_id,
        summary.env_id,
        info.get("group"),
        info.get("seed"),
        None if task is None else str(task),
        str(info.get("principal") or info.get("owner") or ""),
        info.get("opened_at", finished_at - summary.wall_seconds),
        finished_at,
        summary.wall_seconds,
        summary.env_seconds,
        summary.steps,
        int(summary.terminated),
        int(summary.truncated),
        summary.close_reason,
        failure.source if failure else None,
        failure.message if failure else None,
        sum(returns) / len(returns) if returns else 0.0,
        json.dumps(agents),
        json.dumps(dict(info.get("options") or {}), default=_jsonable),
        pack(trajectory),
    )


class StoreRecorder:
    """The server's recorder: a pluggy plugin with a background writer thread."""

    def __init__(self, settings: StoreSettings) -> None:
        if not settings.path:
            raise ValueError("StoreRecorder needs a store path")
        self.settings = settings
        self.store = TrajectoryStore(settings.path)
        self._pending: collections.deque[Pending] = collections.deque()
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._submitted = 0
        self._handled = 0
        self.written = 0
        self.dropped = 0
        self._closing = False
        self._last_retention = 0.0
        run = settings.run
        self.run_id = (
            self.store.start_run(run["kind"], run.get("model", ""), run.get("tags")) if run else None
        )
        self._thread = threading.Thread(target=self._run, name="palaestra-store", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ the hook (event loop)

    @hookimpl
    def palaestra_episode_finished(
        self, summary: EpisodeSummary, trajectory: list[dict[str, Any]], info: dict[str, Any]
    ) -> None:
        self.submit(summary, trajectory, info)

    def submit(
        self, summary: EpisodeSummary, trajectory: Sequence[Mapping[str, Any]], info: Mapping[str, Any]
    ) -> None:
        if len(self._pending) >= self.settings.max_pending:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning(
                    "trajectory store is %d episodes behind: dropped %d", len(self._pending), self.dropped
                )
            return
        self._pending.append((summary, trajectory, info, time.time()))
        self._submitted += 1
        if len(self._pending) >= self.settings.batch_size:
            self._wake.set()

    # ------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        while True:
            self._wake.wait(self.settings.flush_interval_s or None)
            self._wake.clear()
            closing = self._closing
            handled = self._write_pending()
            if time.monotonic() - self._last_retention >= self.settings.retention_interval_s:
                self._retain()
            with self._done:  # after retention: a flush returns with the store in its final state
                self._handled += handled
                self._done.notify_all()
            if closing:
                return

    def _write_pending(self) -> int:
        handled = 0
        while self._pending:
            batch: list[Pending] = []
            while self._pending and len(batch) < self.settings.batch_size:
                batch.append(self._pending.popleft())
            try:
                rows = [episode_row(*item) for item in batch]
                self.written += self.store.insert_rows(rows)
                if self.run_id is not None:
                    self.store.add_run_episodes(self.run_id, [summary.episode_id for summary, *_ in batch])
            except Exception:
                log.exception("trajectory store: writing %d episodes failed", len(batch))
            handled += len(batch)
        return handled

    def _retain(self) -> None:
        self._last_retention = time.monotonic()
        if not (self.settings.max_age_days or self.settings.max_episodes):
            return
        try:
            deleted = self.store.apply_retention(self.settings.max_age_days, self.settings.max_episodes)
        except Exception:
            log.exception("trajectory store: retention failed")
            return
        if deleted:
            log.info("trajectory store: retention deleted %d episodes", deleted)

    # ------------------------------------------------------------ control

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every episode submitted so far is written (or failed to be); False on timeout."""
        target = self._submitted
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._handled >= target, timeout)

    def close(self) -> None:
        """Write what is pending, stop the writer thread and close the database."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=60)
        self.store.close()
