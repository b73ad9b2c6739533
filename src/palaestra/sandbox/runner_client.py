"""The host side of the in-sandbox runner: framing, the request channel and the generic `RunnerSandbox`.

Both built-in backends start `runner.py` inside their isolation (a container or a bubblewrap namespace) and
talk to it over one long-lived pipe, so a job costs one round trip instead of a `docker exec` or a fresh
namespace. The backends differ only in how a runner is started, reached and killed: a `RunnerHandle`.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import json
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from palaestra.sandbox.api import ExecResult, ExecStatus, Limits, Profile, Sandbox, SandboxError

log = logging.getLogger("palaestra.sandbox")

RUNNER_SOURCE = (Path(__file__).parent / "runner.py").read_text()
HOST_GRACE_SECONDS = 3.0  # the host deadline backs up the runner's own, a little later
CONTROL_TIMEOUT = 10.0  # ping, file reads and writes
# Largest reply a runner sends (a 64 MiB file read, or two capped outputs, base64-encoded, with room to
# spare); a larger length prefix can only be garbage in the stream.
MAX_REPLY_BYTES = 512 << 20


class RunnerGone(Exception):
    """The runner closed its channel (it died or was killed)."""


class RunnerHung(Exception):
    """The runner did not answer before the host-side deadline."""


class RunnerCorrupt(RunnerGone):
    """The channel carried something that is not a runner's reply: the stream cannot be trusted any more.

    Nothing but the runner can write into it (it is non-dumpable and, in Docker, the container's init), so
    this is a defence in depth: if a job ever did, the sandbox is replaced like one whose runner was killed.
    """


class FrameSource(abc.ABC):
    @abc.abstractmethod
    async def readexactly(self, n: int) -> bytes: ...


class PlainSource(FrameSource):
    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)


class RunnerChannel:
    """Length-prefixed JSON request/response over a byte stream; one request at a time."""

    def __init__(self, source: FrameSource, writer: asyncio.StreamWriter) -> None:
        self.source = source
        self.writer = writer
        self.lock = asyncio.Lock()

    async def call(self, message: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        body = json.dumps(message).encode()
        async with self.lock:
            try:
                self.writer.write(struct.pack(">I", len(body)) + body)
                await self.writer.drain()
                return await asyncio.wait_for(self._read_reply(), timeout)
            except TimeoutError:
                raise RunnerHung(f"no answer within {timeout:.1f}s") from None
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
                raise RunnerGone(str(exc) or type(exc).__name__) from exc

    async def _read_reply(self) -> dict[str, Any]:
        header = await self.source.readexactly(4)
        (size,) = struct.unpack(">I", header)
        if size > MAX_REPLY_BYTES:
            raise RunnerCorrupt(f"reply length {size} out of range")
        body = await self.source.readexactly(size)
        try:
            reply = json.loads(body)
        except ValueError as exc:  # not JSON, or not UTF-8
            raise RunnerCorrupt(f"undecodable reply: {exc}") from None
        if not isinstance(reply, dict):
            raise RunnerCorrupt(f"reply is not an object: {type(reply).__name__}")
        return reply

    def close(self) -> None:
        self.writer.close()


class RunnerHandle(abc.ABC):
    """One started runner: its channel and a way to destroy its whole sandbox."""

    channel: RunnerChannel
    ident: str

    @abc.abstractmethod
    async def destroy(self) -> None:
        """Kill everything in the sandbox and free its resources. Idempotent."""

    async def ping(self) -> bool:
        try:
            reply = await self.channel.call({"op": "ping"}, CONTROL_TIMEOUT)
        except (RunnerGone, RunnerHung):
            return False
        return bool(reply.get("ok"))

    async def set_episode(self, episode_id: str) -> None:  # noqa: B027 - optional
        """Record which episode holds this runner's sandbox (e.g. in the container's name)."""


HandleFactory = Callable[[], Awaitable[RunnerHandle]]


def limits_payload(limits: Limits) -> dict[str, Any]:
    return asdict(limits)


class RunnerSandbox(Sandbox):
    """A leased sandbox driven through its runner. Backends supply the handle and a replacement factory."""

    workdir = "/workspace"

    def __init__(
        self,
        profile: Profile,
        limits: Limits,
        handle: RunnerHandle,
        replace: HandleFactory,
        on_release: Callable[[RunnerHandle], Awaitable[None]],
    ) -> None:
        self.profile = profile
        self.limits = limits
        self._handle: RunnerHandle | None = handle
        self._replace = replace
        self._on_release = on_release
        self._released = False
        self._lock = asyncio.Lock()

    @property
    def ident(self) -> str:
        return self._handle.ident if self._handle else ""

    def _live_handle(self) -> RunnerHandle:
        if self._released:
            raise SandboxError("sandbox already released")
        if self._handle is None:
            raise SandboxError("sandbox lost its runner and no replacement could be started")
        return self._handle

    async def _control(self, message: Mapping[str, Any]) -> dict[str, Any]:
        handle = self._live_handle()
        try:
            reply = await handle.channel.call(message, CONTROL_TIMEOUT)
        except (RunnerGone, RunnerHung) as exc:
            await self._discard_handle()
            raise SandboxError(f"sandbox runner failed during {message['op']}: {exc}") from exc
        if not reply.get("ok"):
            raise _file_error(reply.get("error", "unknown error"))
        return reply

    async def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        message = {"op": "write", "path": path, "data": base64.b64encode(raw).decode(), "mode": mode}
        async with self._lock:
            await self._control(message)

    async def read_file(self, path: str) -> bytes:
        async with self._lock:
            reply = await self._control({"op": "read", "path": path})
        return base64.b64decode(reply["data"])

    async def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str = b"",
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        limits: Limits | None = None,
    ) -> ExecResult:
        if not argv:
            raise ValueError("argv must not be empty")
        effective = limits or self.limits
        wall = timeout if timeout is not None else effective.wall_seconds
        raw_stdin = stdin.encode() if isinstance(stdin, str) else stdin
        message = {
            "op": "exec",
            "argv": list(argv),
            "stdin": base64.b64encode(raw_stdin).decode(),
            "env": dict(env or {}),
            "timeout": wall,
            "limits": limits_payload(effective),
        }
        started = time.monotonic()
        async with self._lock:
            try:
                handle = self._live_handle()
            except SandboxError as exc:
                return _error_result(str(exc), started)
            try:
                reply = await handle.channel.call(message, wall + HOST_GRACE_SECONDS)
            except RunnerHung as exc:
                # Only the job can stop its runner (e.g. SIGSTOP): kill the sandbox and start afresh.
                await self._reset_handle()
                return ExecResult(
                    ExecStatus.TIMEOUT,
                    None,
                    "",
                    "",
                    time.monotonic() - started,
                    detail=f"the sandbox stopped answering ({exc}); it was killed and replaced "
                    "(work dir lost)",
                )
            except RunnerGone as exc:
                # The job killed its own runner (same user inside the sandbox) or garbled its channel: the
                # job's doing, not the infrastructure's. The sandbox is reset to a fresh one; its work dir
                # is lost.
                await self._reset_handle()
                what = (
                    "corrupted the sandbox runner's channel"
                    if isinstance(exc, RunnerCorrupt)
                    else ("killed the sandbox runner")
                )
                return ExecResult(
                    ExecStatus.KILLED,
                    None,
                    "",
                    "",
                    time.monotonic() - started,
                    detail=f"the program {what}; the sandbox was reset (work dir lost)",
                )
        if not reply.get("ok"):
            return _error_result(f"runner refused the job: {reply.get('error')}", started)
        return _result_from_reply(reply)

    async def _discard_handle(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            await handle.destroy()

    async def _reset_handle(self) -> None:
        await self._discard_handle()
        try:
            self._handle = await self._replace()
        except Exception as exc:
            log.error("could not replace a sandbox whose runner died: %s", exc)

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        handle, self._handle = self._handle, None
        if handle is not None:
            await self._on_release(handle)


def _file_error(message: str) -> Exception:
    if message.startswith("FileNotFoundError"):
        return FileNotFoundError(message)
    if message.startswith(("ValueError", "IsADirectoryError", "NotADirectoryError")):
        return ValueError(message)
    return OSError(message)


def _error_result(detail: str, started: float) -> ExecResult:
    return ExecResult(ExecStatus.SANDBOX_ERROR, None, "", "", time.monotonic() - started, detail=detail)


def _result_from_reply(reply: Mapping[str, Any]) -> ExecResult:
    return ExecResult(
        status=ExecStatus(reply["status"]),
        exit_code=reply["exit_code"],
        stdout=base64.b64decode(reply["stdout"]).decode("utf-8", "replace"),
        stderr=base64.b64decode(reply["stderr"]).decode("utf-8", "replace"),
        wall_seconds=float(reply["wall"]),
        stdout_truncated=bool(reply["stdout_truncated"]),
        stderr_truncated=bool(reply["stderr_truncated"]),
        detail=reply.get("detail", ""),
        cpu_seconds=float(reply.get("cpu", 0.0)),
        cpu_wait_seconds=float(reply.get("cpu_wait", 0.0)),
        overloaded=bool(reply.get("overloaded", False)),
    )
