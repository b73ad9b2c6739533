"""The SQLite schema of the trajectory store, and the queries that read it.

Why SQLite: it ships with Python (the server gains no dependency), it is a single file that several
processes may open at once (WAL mode: the server writes while the dashboard, `palaestra train` or an
export reads or tags runs), and recording is a stream of small appends, which a row store does well.
Columnar analysis is what Parquet export is for (`palaestra.store.export`).

One row per episode: its summary in columns (environment, seed, group, who, times, outcome, reward) and
its trajectory as zlib-compressed JSON. Runs (an evaluation, a training job) name their episodes in a
separate table, so a run may be tagged before or after the server has written its episodes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    episode_id    TEXT PRIMARY KEY,
    env_id        TEXT NOT NULL,
    group_id      TEXT,
    seed          INTEGER,
    task          TEXT,
    principal     TEXT,
    opened_at     REAL,
    finished_at   REAL NOT NULL,
    wall_seconds  REAL,
    env_seconds   REAL,
    steps         INTEGER,
    terminated    INTEGER,
    truncated     INTEGER,
    close_reason  TEXT,
    infra_source  TEXT,
    infra_message TEXT,
    reward        REAL,
    agents        TEXT NOT NULL,
    options       TEXT NOT NULL,
    trajectory    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_env_time ON episodes (env_id, finished_at);
CREATE INDEX IF NOT EXISTS episodes_time ON episodes (finished_at);
CREATE INDEX IF NOT EXISTS episodes_group ON episodes (group_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    model      TEXT NOT NULL,
    tags       TEXT NOT NULL,
    started_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_episodes (
    run_id     TEXT NOT NULL,
    episode_id TEXT NOT NULL,
    PRIMARY KEY (run_id, episode_id)
);
CREATE INDEX IF NOT EXISTS run_episodes_episode ON run_episodes (episode_id);
"""

# The columns of an episode row without its trajectory, in SELECT order.
SUMMARY_COLUMNS = (
    "episode_id",
    "env_id",
    "group_id",
    "seed",
    "task",
    "principal",
    "opened_at",
    "finished_at",
    "wall_seconds",
    "env_seconds",
    "steps",
    "terminated",
    "truncated",
    "close_reason",
    "infra_source",
    "infra_message",
    "reward",
    "agents",
    "options",
)
ALL_COLUMNS = (*SUMMARY_COLUMNS, "trajectory")


@dataclass
class StoreSettings:
    """The `[store]` table of the server configuration."""

    path: str = ""  # "": no store
    max_age_days: float = 0.0  # 0: keep forever
    max_episodes: int = 0  # 0: no limit; beyond it the oldest episodes are deleted
    batch_size: int = 256  # episodes per write transaction at most
    flush_interval_s: float = 0.5  # how long a finished episode may wait before it is written
    max_pending: int = 100_000  # episodes waiting for the writer; beyond it new ones are dropped (logged)
    retention_interval_s: float = 60.0  # how often the writer applies max_age_days / max_episodes
    # {kind, model, tags}: tag every episode this server records with one run (an embedded server of
    # `palaestra eval` or a training job, whose episodes are all that run's)
    run: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> StoreSettings:
        settings = cls()
        for key, value in table.items():
            if not hasattr(settings, key):
                known = ", ".join(sorted(settings.__dict__))
                raise ValueError(f"unknown key store.{key}; known keys: {known}")
            expected = type(getattr(settings, key))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ValueError(f"store.{key} must be {expected.__name__}, got {value!r}")
            setattr(settings, key, value)
        for key in ("max_age_days", "max_episodes", "flush_interval_s", "retention_interval_s"):
            if getattr(settings, key) < 0:
                raise ValueError(f"store.{key} must not be negative, got {getattr(settings, key)}")
        if settings.run:
            run = settings.run
            unknown = set(run) - {"kind", "model", "tags"}
            if unknown or not isinstance(run.get("kind"), str) or not isinstance(run.get("model", ""), str):
                raise ValueError(
                    f"store.run must be a table with kind (string), model (string), tags; got {run!r}"
                )
            if not isinstance(run.get("tags", {}), dict):
                raise ValueError("store.run.tags must be a table")
        for key in ("batch_size", "max_pending"):
            if getattr(settings, key) < 1:
                raise ValueError(f"store.{key} must be at least 1, got {getattr(settings, key)}")
        return settings


def connect(path: str | Path) -> sqlite3.Connection:
    connection = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


def pack(trajectory: Sequence[Mapping[str, Any]]) -> bytes:
    return zlib.compress(json.dumps(trajectory, default=_jsonable, separators=(",", ":")).encode(), 3)


def unpack(blob: bytes) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(zlib.decompress(blob))
    return loaded


def _jsonable(value: Any) -> Any:
    """JSON for what plain json refuses (numpy scalars and arrays, sets, dataclasses): a faithful repr."""
    for attribute in ("tolist", "item"):
        if hasattr(value, attribute):
            return getattr(value, attribute)()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


class TrajectoryStore:
    """A trajectory database file. Safe to share between threads and processes (SQLite WAL).

    Writing episodes is the server's business (`StoreRecorder`); this class writes rows it is given,
    tags runs, reads, and applies retention.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(self.path)
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()  # one connection, used by one thread at a time

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writing

    def insert_rows(self, rows: Iterable[Sequence[Any]]) -> int:
        """Insert episode rows (ALL_COLUMNS order) in one transaction; an episode id seen again replaces
        the old row. Returns how many rows were written."""
        rows = list(rows)
        if not rows:
            return 0
        placeholders = ",".join("?" * len(ALL_COLUMNS))
        with self._lock, _transaction(self._db):
            self._db.executemany(
                f"INSERT OR REPLACE INTO episodes ({','.join(ALL_COLUMNS)}) VALUES ({placeholders})", rows
            )
        return len(rows)

    def start_run(
        self, kind: str, model: str = "", tags: Mapping[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        """Name a run (an evaluation, a training job) whose episodes you will tag; returns its id."""
        run_id = run_id or uuid.uuid4().hex
        with self._lock, _transaction(self._db):
            self._db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?)",
                (run_id, kind, model, json.dumps(dict(tags or {}), default=_jsonable), time.time()),
            )
        return run_id

    def add_run_episodes(self, run_id: str, episode_ids: Iterable[str]) -> None:
        """Tag episodes as belonging to a run (before or after the server has written them)."""
        with self._lock, _transaction(self._db):
            self._db.executemany(
                "INSERT OR IGNORE INTO run_episodes VALUES (?, ?)", [(run_id, e) for e in episode_ids]
            )

    def apply_retention(self, max_age_days: float = 0.0, max_episodes: int = 0) -> int:
        """Delete episodes older than max_age_days and beyond the newest max_episodes; returns how many."""
        deleted = 0
        with self._lock, _transaction(self._db):
            if max_age_days > 0:
                cutoff = time.time() - max_age_days * 86400
                deleted += self._db.execute("DELETE FROM episodes WHERE finished_at < ?", (cutoff,)).rowcount
            if max_episodes > 0:
                deleted += self._db.execute(
                    "DELETE FROM episodes WHERE episode_id IN (SELECT episode_id FROM episodes "
                    "ORDER BY finished_at DESC LIMIT -1 OFFSET ?)",
                    (max_episodes,),
                ).rowcount
        return deleted

    # ------------------------------------------------------------ reading

    def count(self, env_id: str | None = None) -> int:
        if env_id is None:
            return int(self._query("SELECT count(*) FROM episodes")[0][0])
        query = "SELECT count(*) FROM episodes WHERE env_id = ?"
        return int(self._query(query, (env_id,))[0][0])

    def episodes(
        self,
        env_id: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        with_trajectory: bool = False,
    ) -> list[dict[str, Any]]:
        """Episodes, newest first (summaries; trajectories too when asked)."""
        columns = ALL_COLUMNS if with_trajectory else SUMMARY_COLUMNS
        where, params = _filters(env_id, run_id)
        query = (
            f"SELECT {','.join('e.' + c for c in columns)} FROM episodes e {where} "
            "ORDER BY e.finished_at DESC LIMIT ? OFFSET ?"
        )
        rows = self._query(query, (*params, limit, offset))
        return [self._decode(columns, row) for row in rows]

    def iter_episodes(
        self,
        env_id: str | None = None,
        run_id: str | None = None,
        chunk: int = 500,
        with_trajectory: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """Every matching episode (with its trajectory unless told otherwise), oldest first, in chunks."""
        columns = ALL_COLUMNS if with_trajectory else SUMMARY_COLUMNS
        where, params = _filters(env_id, run_id)
        last = -1.0
        last_id = ""
        clause = "AND" if where else "WHERE"
        while True:
            query = (
                f"SELECT {','.join('e.' + c for c in columns)} FROM episodes e {where} "
                f"{clause} (e.finished_at > ? OR (e.finished_at = ? AND e.episode_id > ?)) "
                "ORDER BY e.finished_at, e.episode_id LIMIT ?"
            )
            rows = self._query(query, (*params, last, last, last_id, chunk))
            if not rows:
                return
            for row in rows:
                yield self._decode(columns, row)
            last, last_id = rows[-1][columns.index("finished_at")], rows[-1][0]

    def episode(self, episode_id: str) -> dict[str, Any] | None:
        query = f"SELECT {','.join(ALL_COLUMNS)} FROM episodes WHERE episode_id = ?"
        rows = self._query(query, (episode_id,))
        return self._decode(ALL_COLUMNS, rows[0]) if rows else None

    def environments(self) -> list[dict[str, Any]]:
        """Per environment: episodes, mean reward (infrastructure failures left out), failures, last time."""
        query = (
            "SELECT env_id, count(*), avg(CASE WHEN infra_source IS NULL THEN reward END), "
            "sum(infra_source IS NOT NULL), max(finished_at) FROM episodes GROUP BY env_id ORDER BY env_id"
        )
        return [
            {"env_id": e, "episodes": n, "mean_reward": mean, "infra_failures": failures, "last": last}
            for e, n, mean, failures, last in self._query(query)
        ]

    def curve(self, env_id: str, limit: int = 5000) -> list[dict[str, Any]]:
        """(finished_at, reward) of an environment's latest episodes, oldest first, without infra failures."""
        query = (
            "SELECT finished_at, reward, episode_id FROM (SELECT finished_at, reward, episode_id "
            "FROM episodes WHERE env_id = ? AND infra_source IS NULL ORDER BY finished_at DESC LIMIT ?) "
            "ORDER BY finished_at"
        )
        return [
            {"time": time_, "reward": reward, "episode_id": episode_id}
            for time_, reward, episode_id in self._query(query, (env_id, limit))
        ]

    def runs(self) -> list[dict[str, Any]]:
        query = (
            "SELECT r.run_id, r.kind, r.model, r.tags, r.started_at, count(re.episode_id) FROM runs r "
            "LEFT JOIN run_episodes re ON re.run_id = r.run_id GROUP BY r.run_id ORDER BY r.started_at DESC"
        )
        return [
            {"run_id": i, "kind": k, "model": m, "tags": json.loads(tags), "started_at": s, "episodes": n}
            for i, k, m, tags, s, n in self._query(query)
        ]

    def runs_of(self, episode_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The runs each episode was tagged with (kind, model, tags)."""
        if not episode_ids:
            return {}
        marks = ",".join("?" * len(episode_ids))
        query = (
            "SELECT re.episode_id, r.run_id, r.kind, r.model, r.tags FROM run_episodes re "
            f"JOIN runs r ON r.run_id = re.run_id WHERE re.episode_id IN ({marks})"
        )
        found: dict[str, list[dict[str, Any]]] = {}
        for episode_id, run_id, kind, model, tags in self._query(query, tuple(episode_ids)):
            found.setdefault(episode_id, []).append(
                {"run_id": run_id, "kind": kind, "model": model, "tags": json.loads(tags)}
            )
        return found

    def _query(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(query, tuple(params)).fetchall()

    def _decode(self, columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
        record = dict(zip(columns, row, strict=True))
        record["agents"] = json.loads(record["agents"])
        record["options"] = json.loads(record["options"])
        record["terminated"] = bool(record["terminated"])
        record["truncated"] = bool(record["truncated"])
        if "trajectory" in record:
            record["trajectory"] = unpack(record["trajectory"])
        return record


def _filters(env_id: str | None, run_id: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses, params = [], []
    if env_id is not None:
        clauses.append("e.env_id = ?")
        params.append(env_id)
    if run_id is not None:
        clauses.append("e.episode_id IN (SELECT episode_id FROM run_episodes WHERE run_id = ?)")
        params.append(run_id)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
