"""A pool of verifier worker processes with a hard per-item deadline.

Why processes: math-verify's timeouts need signals (main thread only) and sympy can run past them in C
code. Here every verification runs in a worker process. Each worker has a supervisor thread in the
server process that hands it one job at a time and waits at most the job's deadline; a worker that
misses it is killed (SIGKILL) and replaced, and the job's verdict is TIMEOUT - never "wrong answer".
A worker that dies mid-job gives an ERROR verdict and is replaced too.

The pool is independent of any event loop: jobs are `concurrent.futures.Future`s, which `verify`
awaits from whichever loop calls it, and `verify_sync` waits for from plain threads. One pool is shared
by every episode of a server process (`shared_pool`), created on first use.

Workers are fresh interpreters (running `palaestra.plugins.math.worker.main`, talking pickles over a
socket pair): like multiprocessing's 'spawn', safe from a process running gRPC threads and an event loop,
and unlike it they never re-import the server's `__main__` module.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import palaestra
from palaestra.plugins.math.checker import VerifyOptions
from palaestra.plugins.math.worker import Reply
from palaestra.types import ComponentStatus

log = logging.getLogger("palaestra.math.pool")

# Not `python -m ...worker`: that would import the worker module twice (once through the package).
_WORKER_BOOT = "import sys; from palaestra.plugins.math.worker import main; main(sys.argv)"

DEFAULT_DEADLINE_S = 5.0
SOFT_DEADLINE_FRACTION = 0.75  # the in-worker alarm fires first, the kill comes at the full deadline


@dataclass(frozen=True)
class Verdict:
    """The result of one verification. `correct` means something only when status is OK."""

    status: ComponentStatus
    correct: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class PoolStats:
    completed: int = 0
    timeouts: int = 0
    errors: int = 0
    workers_killed: int = 0
    workers_started: int = 0


@dataclass
class _Job:
    gold: str
    pred: str
    options: VerifyOptions
    deadline_s: float
    future: Future[Verdict] = field(default_factory=Future)
    job_id: int = 0


def _worker_environment() -> dict[str, str]:
    """The server's environment, with this package's source root on PYTHONPATH so the worker finds it."""
    env = dict(os.environ)
    source_root = str(Path(palaestra.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH", "")) if p)
    return env


class _WorkerSlot:
    """One worker process and the thread that feeds it."""

    def __init__(self, pool: VerifierPool, index: int) -> None:
        self._pool = pool
        self._index = index
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self.thread = threading.Thread(target=self._run, name=f"math-verifier-{index}", daemon=True)

    # ------------------------------------------------------------ process lifecycle

    def start_process(self) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOT, str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_worker_environment(),
                start_new_session=True,  # a Ctrl-C on the server's terminal is the server's business
            )
        finally:
            child_end.close()
        self._process, self._conn = process, Connection(parent_end.detach())
        self._pool.stats.workers_started += 1

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill_process(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            self._process.wait(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None

    def stop_process(self) -> None:
        """Ask the worker to exit; kill it if it does not within a second."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1)
        self.kill_process()

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        while True:
            job = self._pool.jobs.get()
            if job is None:
                self.stop_process()
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # the caller gave up before the job started
            job.future.set_result(self._execute(job))

    def _execute(self, job: _Job) -> Verdict:
        if not self.alive():
            try:
                self.kill_process()
                self.start_process()
            except Exception as exc:  # cannot start a worker: an infrastructure failure for this item
                self._pool.stats.errors += 1
                return Verdict(ComponentStatus.ERROR, False, f"could not start a verifier worker: {exc}")
        assert self._conn is not None
        started = time.perf_counter()
        try:
            fraction = self._pool.soft_deadline_fraction
            soft_deadline = job.deadline_s * fraction if fraction else None
            self._conn.send((job.job_id, job.gold, job.pred, job.options, soft_deadline))
            if not self._conn.poll(job.deadline_s):
                return self._kill_after_deadline(job, time.perf_counter() - started)
            reply: Reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._pool.stats.errors += 1
            self.kill_process()
            return Verdict(
                ComponentStatus.ERROR, False, f"verifier worker died: {exc!r}", time.perf_counter() - started
            )
        return self._verdict_from(reply, job, time.perf_counter() - started)

    def _kill_after_deadline(self, job: _Job, elapsed: float) -> Verdict:
        log.warning(
            "verifier worker %d missed the %.2fs deadline; killing and replacing it",
            self._index,
            job.deadline_s,
        )
        self._pool.stats.timeouts += 1
        self._pool.stats.workers_killed += 1
        self.kill_process()
        with contextlib.suppress(Exception):  # replace now, while no job waits on this slot
            self.start_process()
        return Verdict(
            ComponentStatus.TIMEOUT,
            False,
            f"verification killed after the {job.deadline_s:.2f}s deadline",
            elapsed,
        )

    def _verdict_from(self, reply: Reply, job: _Job, elapsed: float) -> Verdict:
        job_id, outcome, correct, detail, _worker_seconds = reply
        if (
            job_id != job.job_id
        ):  # cannot happen with one job in flight per worker; do not trust it if it does
            self._pool.stats.errors += 1
            self.kill_process()
            return Verdict(ComponentStatus.ERROR, False, "verifier worker answered the wrong job", elapsed)
        if outcome == "timeout":
            self._pool.stats.timeouts += 1
            return Verdict(ComponentStatus.TIMEOUT, False, detail, elapsed)
        if outcome == "error":
            self._pool.stats.errors += 1
            return Verdict(ComponentStatus.ERROR, False, detail, elapsed)
        self._pool.stats.completed += 1
        return Verdict(ComponentStatus.OK, bool(correct), detail, elapsed)


class VerifierPool:
    """Verifies (gold, prediction) pairs in worker processes, each with a hard deadline."""

    def __init__(
        self,
        workers: int | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
        soft_deadline_fraction: float | None = SOFT_DEADLINE_FRACTION,
    ) -> None:
        """soft_deadline_fraction: when the in-worker alarm fires, as a share of the deadline; None turns
        the alarm off, leaving only the kill (tests use it to exercise the kill path)."""
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.soft_deadline_fraction = soft_deadline_fraction
        self.size = max(1, workers or os.cpu_count() or 1)
        self.default_deadline_s = deadline_s
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.stats = PoolStats()
        self._ids = itertools.count(1)
        self._closed = False
        self._slots = [_WorkerSlot(self, i) for i in range(self.size)]
        for slot in self._slots:
            slot.start_process()
            slot.thread.start()

    def submit(
        self, gold: str, pred: str, options: VerifyOptions | None = None, deadline_s: float | None = None
    ) -> Future[Verdict]:
        """Queue one verification. The deadline counts from when a worker picks the job up."""
        if self._closed:
            raise RuntimeError("the verifier pool is shut down")
        job = _Job(
            gold,
            pred,
            options or VerifyOptions(),
            deadline_s or self.default_deadline_s,
            job_id=next(self._ids),
        )
        self.jobs.put(job)
        return job.future

    async def verify(
        self, gold: str, pred: str, deadline_s: float | None = None, options: VerifyOptions | None = None
    ) -> Verdict:
        return await asyncio.wrap_future(self.submit(gold, pred, options, deadline_s))

    def verify_sync(
        self, gold: str, pred: str, deadline_s: float | None = None, options: VerifyOptions | None = None
    ) -> Verdict:
        return self.submit(gold, pred, options, deadline_s).result()

    def worker_pids(self) -> list[int | None]:
        return [slot._process.pid if slot._process else None for slot in self._slots]

    def shutdown(self) -> None:
        """Stop the workers after the queued jobs are done. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for _ in self._slots:
            self.jobs.put(None)
        for slot in self._slots:
            slot.thread.join(timeout=30)

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


_shared: VerifierPool | None = None
_shared_lock = threading.Lock()
_shared_workers: int | None = None


def configure_shared_pool(workers: int | None) -> None:
    """Set the size of the shared pool (the plugin's `verify_workers`); applies when it is next created."""
    global _shared_workers
    _shared_workers = workers


def shared_pool() -> VerifierPool:
    """The process-wide pool, created on first use."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._closed:
            _shared = VerifierPool(workers=_shared_workers)
        return _shared


def shutdown_shared_pool() -> None:
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None:
        pool.shutdown()


atexit.register(shutdown_shared_pool)
