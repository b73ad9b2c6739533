"""A `Client` in a forked child: its channel lives in a freshly started interpreter.

gRPC's asyncio stack cannot be used in a child forked from a process that used it: the parent's poller
thread is missing in the child, gRPC skips its fork handlers, and even a new channel hangs
(docs/reliability.md lists what was tried). So a `Client` that finds itself in such a child - made before
the fork and used after it, or made in the child - rebuilds its channel in a `SpawnedClient`: a new Python
process (fork + exec, so no gRPC state is inherited) that holds an ordinary `Client` and answers its method
calls over a pipe. Each call costs one more local round trip; everything else behaves as before.

The helper reads its requests from stdin, so it ends by itself when its owner dies (EOF). It is started
with `subprocess`, not `multiprocessing`, because forked workers are often daemonic (multiprocessing
pools, SB3's SubprocVecEnv), and daemonic processes may not start multiprocessing children.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import IO, Any

import grpc

from palaestra.agents.client import PalaestraError

_HEADER = struct.Struct("!Q")  # the length of the pickled frame that follows


class SpawnedClient:
    """A `Client` in a helper process; `call(name, args, kwargs)` runs `client.name(*args, **kwargs)`."""

    def __init__(self, address: Any, kwargs: dict[str, Any]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "palaestra.agents.forked"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to, self._from = self._process.stdin, self._process.stdout
        self._lock = threading.Lock()  # one call at a time on the pipe, as on the Client's own loop
        try:
            self.call("__init__", (address,), kwargs)
        except BaseException:
            self.close()  # the helper would otherwise wait on its stdin until this object is collected
            raise

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            try:
                _write(self._to, (name, args, kwargs))
                kind, value = _read(self._from)
            except (OSError, EOFError, pickle.UnpicklingError):
                raise PalaestraError(
                    grpc.StatusCode.UNAVAILABLE, "the client's channel process (forked child) has ended"
                ) from None
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("close_client", (), {})
        with contextlib.suppress(OSError):
            self._to.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        with contextlib.suppress(OSError):
            self._from.close()


def _write(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)  # frames from our own helper process, over a private pipe


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it crosses the pipe (PalaestraError and its subclasses do), else its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The helper's loop: the first request builds the Client; EOF (the owner is gone) ends it."""
    from palaestra.agents.client import Client

    client: Client | None = None
    try:
        while True:
            try:
                name, args, kwargs = _read(requests)
            except EOFError:
                return
            try:
                if name == "__init__":
                    client = Client(*args, **kwargs)
                    result = None
                else:
                    assert client is not None
                    result = getattr(client, name)(*args, **kwargs)
                reply: tuple[str, Any] = ("ok", result)
            except Exception as exc:
                reply = ("error", _portable(exc))
            _write(replies, reply)
    finally:
        if client is not None:
            client.close_client()


if __name__ == "__main__":
    # Replies own the real stdout; anything else printed (a plugin, a warning) goes to stderr instead.
    reply_stream = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, reply_stream)
