"""The verifier worker process: receives (job id, gold, prediction, options) and answers a verdict.

A soft deadline (SIGALRM, in this process's main thread where signals work) interrupts Python-level
sympy loops cheaply, leaving the worker alive. Computations stuck in C (a huge integer power) ignore
signals; the parent's hard deadline kills the whole process for those.
"""

from __future__ import annotations

import signal
import time
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from palaestra.plugins.math.checker import GoldUnparseable, VerifyOptions, check

# Replies: (job_id, outcome, correct, detail, seconds); outcome is "ok", "timeout" or "error".
Reply = tuple[int, str, bool, str, float]


class _SoftDeadline(BaseException):
    """Raised by the alarm handler. A BaseException so that sympy's `except Exception` cannot swallow it."""


class _Alarm:
    armed = False

    @classmethod
    def handler(cls, signum: int, frame: FrameType | None) -> None:
        if cls.armed:  # a late alarm after the job finished is ignored
            cls.armed = False
            raise _SoftDeadline


def run_job(
    gold: str, pred: str, options: VerifyOptions, soft_deadline_s: float | None
) -> tuple[str, bool, str]:
    """Check one pair; soft_deadline_s None runs without the alarm (the parent's kill is the only limit)."""
    if soft_deadline_s is not None:
        _Alarm.armed = True
        signal.setitimer(signal.ITIMER_REAL, max(soft_deadline_s, 0.001))
    try:
        return "ok", check(gold, pred, options), ""
    except _SoftDeadline:
        return "timeout", False, f"verification exceeded {soft_deadline_s or 0:.2f}s (soft deadline)"
    except GoldUnparseable as exc:
        return "error", False, str(exc)
    except Exception as exc:  # a checker bug must come back as ERROR, not kill the worker
        return "error", False, f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        _Alarm.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def worker_main(conn: Connection) -> None:
    """The worker's loop. Exits on None or when the parent goes away."""
    signal.signal(signal.SIGALRM, _Alarm.handler)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the server is the parent's business
    import math_verify  # noqa: F401 - import once up front, not on the first job's clock

    while True:
        try:
            message: Any = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job_id, gold, pred, options, soft_deadline_s = message
        started = time.perf_counter()
        try:
            outcome, correct, detail = run_job(gold, pred, options, soft_deadline_s)
        except _SoftDeadline:  # the alarm fired between the job's end and disarming
            outcome, correct, detail = "timeout", False, "verification exceeded its soft deadline"
        reply: Reply = (job_id, outcome, correct, detail, time.perf_counter() - started)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


def main(argv: list[str]) -> None:
    """The worker process's entry point; argv[1] is the file descriptor of its end of a socket pair."""
    worker_main(Connection(int(argv[1])))
