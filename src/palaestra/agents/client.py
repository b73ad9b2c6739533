"""The client SDK: talk to a Palaestra server from asyncio (`AsyncClient`) or plain code (`Client`).

```python
from palaestra.agents.client import Client

with Client("127.0.0.1:50051") as client:
    [first] = client.open("echo/text", seed=1)
    step = client.step(first.episode_id, "apple")
    print(step.result.reward, step.done)
    client.close(first.episode_id)
```

Everything travels over one bidirectional Session stream: every request carries a fresh request id and
its reply is matched by that id, so many episodes (and many coroutines) share the stream safely.
`step_many` sends the actions of many episodes in one message. When the client closes, the stream ends
and the server closes whatever episodes are still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np

from palaestra import types as t
from palaestra import wire
from palaestra.v1 import catalog_pb2, catalog_pb2_grpc, env_pb2, env_pb2_grpc, types_pb2

if TYPE_CHECKING:
    from palaestra.agents.forked import SpawnedClient

ActionLike = t.Action | t.Message | str | int | np.integer[Any] | np.ndarray
Actions = ActionLike | Mapping[str, ActionLike]
T = TypeVar("T")
# Called by the stream reader with a request's reply, or with the error that ended the stream.
OnReply = Callable[["env_pb2.SessionResponse | PalaestraError"], None]

# Fork: clients whose channel is open in this process. A child forked while one was open cannot use gRPC's
# asyncio stack at all (even a new channel hangs: docs/reliability.md), so new clients there fail at once.
_OPEN: weakref.WeakSet[AsyncClient] = weakref.WeakSet()
_forked_with_open_clients = False


def _note_fork_in_child() -> None:
    global _forked_with_open_clients
    _forked_with_open_clients = _forked_with_open_clients or bool(_OPEN)


os.register_at_fork(after_in_child=_note_fork_in_child)


class PalaestraError(Exception):
    """The server refused a request: `code` is the gRPC status code, `message` says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # pickled as its arguments (and its subclass: StreamBroken)
        return (type(self), (self.code, self.message))


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _error_from_status(status: Any) -> PalaestraError:
    return PalaestraError(_CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message)


def as_action(value: ActionLike) -> t.Action:
    """Accept the obvious shorthands: text, an int, a numpy array, an assistant message."""
    if isinstance(value, t.Action):
        return value
    if isinstance(value, t.Message):
        return t.Action(message=value)
    if isinstance(value, str):
        return t.Action(text=value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return t.Action(discrete=int(value))
    if isinstance(value, np.ndarray):
        return (
            t.Action(discrete=int(value))
            if value.ndim == 0 and value.dtype.kind in "iu"
            else t.Action(tensor=value)
        )
    raise TypeError(f"cannot turn {type(value).__name__} into an action")


def _step_item(episode_id: str, actions: Actions) -> env_pb2.EpisodeActions:
    """One episode's part of a step request."""
    item = env_pb2.EpisodeActions(episode_id=episode_id)
    _fill_actions(item, actions)
    return item


def _fill_actions(out: env_pb2.EpisodeActions, actions: Actions) -> None:
    if type(actions) is str:  # the common case, without an Action in between
        out.actions.add().action.text = actions
    elif isinstance(actions, Mapping):
        for agent, action in actions.items():
            wire.action_to_proto(as_action(action), out.actions.add(agent=agent).action)
    else:
        wire.action_to_proto(as_action(actions), out.actions.add().action)


def channel_options(max_message_mb: int = 64, keepalive_s: float = 10.0) -> list[tuple[str, Any]]:
    size = max_message_mb * 1024 * 1024
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        # Ping the server every keepalive_s: a dead or hung server is noticed within about 2 x keepalive_s,
        # and the calls waiting on it end as lost episodes instead of hanging.
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_s * 1000)),
        ("grpc.http2.ping_timeout_ms", int(keepalive_s * 1000)),  # gRPC's default: a minute
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect with backoff: 0.5 s at first, doubling up to 5 s (a restarted server is found quickly).
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.min_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5_000),
        # Each client its own connection: without auth the server tells callers apart by connection.
        ("grpc.use_local_subchannel_pool", 1),
    ]


DIRECTORY_SCHEME = "directory:"  # "directory:NAME": the replicas a Palaestra directory on Ray lists


def replica_addresses(address: str | Sequence[str]) -> tuple[list[str], str | None] | None:
    """What an address names: None for one server ("host:port"); else `(addresses, directory)` for
    several replicas: "host1:port1,host2:port2" or a list of addresses, or the replicas a directory actor on
    Ray lists ("directory:NAME"; "directory:" alone names the default one, `palaestra cluster`'s)."""
    if isinstance(address, str):
        if address.startswith(DIRECTORY_SCHEME):
            return [], address.removeprefix(DIRECTORY_SCHEME)
        if "," not in address:
            return None
        address = address.split(",")
    addresses = [a.strip() for a in address if a.strip()]
    if not addresses:
        raise ValueError("give at least one server address (host:port) or a directory (directory:NAME)")
    return addresses, None


# Single-episode steps (and resets) that coroutines ask for in the same loop turn travel together, at most
# this many per message: with more, the server steps the first message while this process still handles
# the replies of the one before and prepares the next (64 concurrent echo episodes, server without a
# store: 23,600 steps/s as one message of 64, 35,500 as two of 32, 28,000 as four of 16).
COALESCED_PER_MESSAGE = 32


class AsyncClient:
    """An asyncio client. Use `async with AsyncClient(address) as client:`.

    Several addresses ("h1:p1,h2:p2" or a list) or a directory ("directory:NAME") make a `MultiAsyncClient`
    (agents/multi.py): one view over server replicas, with these methods, that places each episode on a
    replica and keeps it there."""

    def __new__(cls, address: str | Sequence[str] = (), **kwargs: Any) -> AsyncClient:
        if cls is AsyncClient and address and replica_addresses(address) is not None:
            from palaestra.agents.multi import MultiAsyncClient  # it imports this module

            return object.__new__(MultiAsyncClient)  # Python then calls MultiAsyncClient.__init__
        return object.__new__(cls)

    def __init__(
        self,
        address: str | Sequence[str],
        *,
        token: str | None = None,
        tls_root_cert: str | Path | None = None,
        max_message_mb: int = 64,
        timeout_s: float | None = 300.0,
        keepalive_s: float = 10.0,
    ) -> None:
        """`token`: the bearer token naming this client's principal. `tls_root_cert`: the CA (or
        self-signed certificate) to trust; without it the channel is plaintext. `timeout_s`: the deadline
        of every request (None: none); a request that gets no reply in time raises DEADLINE_EXCEEDED."""
        if not isinstance(address, str):  # AsyncClient([...]) is a MultiAsyncClient: a subclass's mistake
            raise TypeError(f"{type(self).__name__} takes one address (host:port), got {address!r}")
        _refuse_in_forked_child()
        options = channel_options(max_message_mb, keepalive_s)
        if tls_root_cert is not None:
            credentials = grpc.ssl_channel_credentials(Path(tls_root_cert).read_bytes())
            self.channel = grpc.aio.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(address, options=options)
            if token and not _is_loopback(address):
                warnings.warn(
                    f"the bearer token travels to {address} without TLS; pass tls_root_cert", stacklevel=3
                )
        self.metadata: list[tuple[str, str]] = []
        if token:
            self.metadata.append(("authorization", f"Bearer {token}"))
        self.timeout_s = timeout_s
        # Requests larger than this are refused here; the server refuses them in-band above 15/16 of its
        # transport limit, and a message above the transport limit would end the whole stream.
        self.max_request_bytes = max_message_mb * 1024 * 1024 * 15 // 16
        # Episodes opened on the current stream, and episodes lost with a broken one (-> why).
        self._live: set[str] = set()
        self._lost: dict[str, t.InfraFailure] = {}
        self._sweeper: asyncio.Task[None] | None = None  # expires requests past their deadline
        self.catalog = catalog_pb2_grpc.EnvCatalogStub(self.channel)
        self.unary = env_pb2_grpc.EnvServiceStub(self.channel)
        _OPEN.add(self)
        self._ids = itertools.count(1)
        # request id -> (request, callback, deadline on the loop's clock)
        self._pending: dict[str, tuple[env_pb2.SessionRequest, OnReply, float]] = {}
        # Single steps and resets asked for in the same event-loop turn, waiting to travel together.
        # (item, its caller's future, its deadline): the deadline runs from when it was asked for.
        self._queued: dict[str, list[tuple[Any, asyncio.Future[Any], float]]] = {"step": [], "reset": []}
        self._outbox: _Outbox | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stream_error: PalaestraError | None = None  # what ended the last stream, if one ended
        self._closed = False

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ the stream

    def _ensure_stream(self) -> _Outbox:
        """The current stream's outbox; a new stream when there is none (first use, or the last one broke:
        the channel reconnects with backoff and the stream waits for it, within the requests' deadlines)."""
        if self._closed:
            raise PalaestraError(grpc.StatusCode.CANCELLED, "the client is closed")
        if self._outbox is None:
            self._outbox = _Outbox(self._send_queued)
            call = self.unary.Session(self._outbox, metadata=self.metadata or None, wait_for_ready=True)
            self._reader = asyncio.create_task(self._read_replies(call, self._outbox))
        return self._outbox

    async def _read_replies(self, call: Any, outbox: _Outbox) -> None:
        error: PalaestraError | None = None
        try:
            async for reply in call:
                entry = self._pending.pop(reply.request_id, None)
                if reply.WhichOneof("response") == "open":
                    opened = [e.episode_id for e in reply.open.episodes]
                    self._live.update(opened)
                    if entry is None and opened:  # its caller gave up (deadline): do not leak them
                        self._close_quietly(opened)
                if entry is not None:
                    entry[1](reply)
                elif reply.HasField("error") and not reply.request_id:
                    error = _error_from_status(reply.error)  # the server ends the stream (e.g. idle)
        except grpc.aio.AioRpcError as exc:
            error = PalaestraError(exc.code(), exc.details() or "")
        except asyncio.CancelledError:
            error = PalaestraError(grpc.StatusCode.CANCELLED, "the client was closed")
            raise
        finally:
            error = error or PalaestraError(grpc.StatusCode.UNAVAILABLE, "the session stream ended")
            self._stream_error = error
            if self._outbox is outbox:  # the next request starts a new stream
                self._outbox, self._reader = None, None
            # Steps and resets queued for this stream but not yet sent go on the next one (a new stream,
            # or answered here since their episodes are lost), within their own deadlines.
            for kind in outbox.end(abandon=True):
                asyncio.get_running_loop().call_soon(self._send_queued, kind)
            # The server closes a stream's episodes when it ends: they are lost, and what was asked of them
            # ends as an infrastructure failure (trainers drop such episodes); opens may be retried.
            failure = t.InfraFailure(
                "connection", f"the session stream to the server ended ({error}); the episode is lost"
            )
            self._lost.update(dict.fromkeys(self._live, failure))
            self._live.clear()
            pending, self._pending = self._pending, {}
            for request, on_reply, _deadline in pending.values():
                lost = _lost_reply(request, failure)
                on_reply(lost if lost is not None else StreamBroken(error.code, error.message))

    def _close_quietly(self, episode_ids: list[str]) -> None:
        with contextlib.suppress(Exception):
            self._send(env_pb2.SessionRequest(close=env_pb2.CloseRequest(episode_ids=episode_ids)), _ignore)

    def _send(
        self, request: env_pb2.SessionRequest, on_reply: OnReply, deadline: float | None = None
    ) -> None:
        """Put a request on the stream. `on_reply` gets its reply, or the error that broke the stream,
        straight from the reader (a callback, not a future: one event-loop hop less per reply).
        Steps, resets and closes of episodes lost with an earlier stream are answered here.
        `deadline` (the loop's clock): when the request was asked for earlier than now."""
        if self._lost:
            answered = self._answer_lost(request, on_reply)
            if answered is None:
                return
            request, on_reply = answered
        if request.ByteSize() > self.max_request_bytes:
            size = request.ByteSize()
            raise PalaestraError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request is {size} bytes, above the limit of {self.max_request_bytes} bytes per "
                "message (max_message_mb); send fewer episodes or smaller actions per message",
            )
        outbox = self._ensure_stream()
        request.request_id = request_id = str(next(self._ids))
        self._pending[request_id] = (request, on_reply, self._deadline() if deadline is None else deadline)
        outbox.put(request)

    def _deadline(self) -> float:
        """The deadline of a request asked for now, on the loop's clock (starts the sweeper that keeps it)."""
        if self.timeout_s is None:
            return float("inf")
        loop = asyncio.get_running_loop()
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._expire_late(self.timeout_s))
        return loop.time() + self.timeout_s

    async def _expire_late(self, timeout: float) -> None:
        """Fail requests past their deadline with DEADLINE_EXCEEDED (one sweep a second, or faster for
        short timeouts: cheaper per request than a timer each)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = loop.time()
            message = f"no reply within {timeout} s (the client's timeout_s)"
            late = [request_id for request_id, entry in self._pending.items() if entry[2] < now]
            for request_id in late:
                entry = self._pending.pop(request_id, None)
                if entry is not None:
                    entry[1](PalaestraError(grpc.StatusCode.DEADLINE_EXCEEDED, message))
            # Steps and resets still queued, not yet requests: the writer is stuck (no connection yet, or
            # a server that stopped reading them), and they must not wait past their deadline either.
            for kind, queued in self._queued.items():
                if queued and queued[0][2] < now:
                    self._queued[kind] = [entry for entry in queued if entry[2] >= now]
                    for _, future, deadline in queued:
                        if deadline < now and not future.done():
                            future.set_exception(PalaestraError(grpc.StatusCode.DEADLINE_EXCEEDED, message))

    def _answer_lost(
        self, request: env_pb2.SessionRequest, on_reply: OnReply
    ) -> tuple[env_pb2.SessionRequest, OnReply] | None:
        """Answer the lost episodes of a step, reset or close locally; None when nothing is left to send,
        else the request without them and a callback that puts their answers back in place."""
        kind = request.WhichOneof("request")
        ids = episode_ids(request)
        positions = [i for i, episode_id in enumerate(ids) if episode_id in self._lost]
        if not positions:
            return request, on_reply
        failure = self._lost[ids[positions[0]]]
        full = _lost_reply(request, failure)
        assert full is not None and kind is not None
        if len(positions) == len(ids):
            on_reply(full)
            return None
        alive = [i for i in range(len(ids)) if i not in set(positions)]
        trimmed = env_pb2.SessionRequest()
        if kind == "close":
            trimmed.close.episode_ids.extend(ids[i] for i in alive)
        else:
            items = getattr(request, kind).episodes
            getattr(trimmed, kind).episodes.extend(items[i] for i in alive)

        def merge(outcome: env_pb2.SessionResponse | PalaestraError) -> None:
            if isinstance(outcome, PalaestraError) or outcome.WhichOneof("response") != kind:
                on_reply(outcome)
                return
            if kind == "close":
                full.close.summaries.extend(outcome.close.summaries)
            else:
                part = getattr(outcome, kind).episodes
                for position, result in zip(alive, part, strict=False):
                    getattr(full, kind).episodes[position].CopyFrom(result)
            on_reply(full)

        return trimmed, merge

    async def _call(self, request: env_pb2.SessionRequest) -> env_pb2.SessionResponse:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._send(request, lambda outcome: _settle([future], outcome))
        return _checked(await future)

    async def send(self, request: env_pb2.SessionRequest) -> env_pb2.SessionResponse:
        """Send one request on the Session stream and return its reply (an in-band error raises
        PalaestraError). For requests without a typed method here, e.g. vectors (agents/vector.py)."""
        return await self._call(request)

    # ------------------------------------------------------------ episodes

    async def open(
        self,
        env_id: str,
        *,
        seed: int | None = None,
        options: Mapping[str, Any] | None = None,
        task: int | str | None = None,
        count: int = 1,
    ) -> list[t.EpisodeStep]:
        """Open `count` episodes of one task; returns each one's id and initial observations."""
        request = env_pb2.OpenRequest(env_id=env_id, count=count)
        if seed is not None:
            request.seed = seed
        if options:
            request.options.CopyFrom(wire.struct_from_dict(options))
        if isinstance(task, int):
            request.task.index = task
        elif isinstance(task, str):
            request.task.id = task
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout_s is None else loop.time() + self.timeout_s
        while True:
            try:
                reply = await self._call(env_pb2.SessionRequest(open=request))
                break
            except StreamBroken as exc:
                # Episodes of a broken stream are closed by the server, so opening again is safe.
                retry = exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
                if not retry or self._closed or (deadline is not None and loop.time() > deadline):
                    raise
                await asyncio.sleep(0.2)
        return [wire.episode_step_from_proto(e) for e in reply.open.episodes]

    async def reset(
        self, episode_id: str, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> t.EpisodeStep:
        item = env_pb2.EpisodeReset(episode_id=episode_id)
        if seed is not None:
            item.seed = seed
        if options:
            item.options.CopyFrom(wire.struct_from_dict(options))
        return _single(await self._enqueue("reset", item))

    async def reset_many(self, episode_ids: Sequence[str]) -> list[t.EpisodeStep]:
        """Reset many episodes (each continuing its own random stream) in one message."""
        request = env_pb2.ResetRequest(episodes=[env_pb2.EpisodeReset(episode_id=i) for i in episode_ids])
        reply = await self._call(env_pb2.SessionRequest(reset=request))
        return [_single(e) for e in reply.reset.episodes]

    async def step(self, episode_id: str, action: Actions) -> t.EpisodeStep:
        """Step one episode. `action` is one action, or {agent: action} for multi-agent environments.

        Steps that several coroutines ask for in the same event-loop turn travel in ONE message (each
        episode still gets its own result or error), so many concurrent episodes cost few messages.
        """
        return _single(await self._enqueue("step", _step_item(episode_id, action)))

    def _enqueue(self, kind: str, item: Any) -> asyncio.Future[types_pb2.EpisodeResult]:
        """Queue a one-episode step or reset, to travel together with the others of its kind that
        coroutines ask for in the same event-loop turn (many concurrent episodes then cost a few messages,
        not one each). The future gets its EpisodeResult, or the error.

        The first one queued wakes the stream's writer (gRPC's task that reads the requests), which runs
        after everything else ready in this loop turn, so the steps that other coroutines ask for in the
        same turn join the message: one event-loop hop from the caller to the wire, not two."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failure = self._lost.get(item.episode_id) if self._lost else None
        if failure is not None:  # lost with an earlier stream: answered here, no stream needed
            future.set_result(_lost_result(kind, item.episode_id, failure))
            return future
        outbox = self._ensure_stream()  # raises at once when the client is closed
        queued = self._queued[kind]
        queued.append((item, future, self._deadline()))
        if len(queued) == 1:
            outbox.put_batch(kind)
        return future

    def _send_queued(self, kind: str) -> None:
        """Send the steps (or resets) queued so far, at most COALESCED_PER_MESSAGE per request (the writer
        calls this when it runs)."""
        queued, self._queued[kind] = self._queued[kind], []
        for start in range(0, len(queued), COALESCED_PER_MESSAGE):
            self._send_coalesced(kind, queued[start : start + COALESCED_PER_MESSAGE])

    def _send_coalesced(self, kind: str, queued: list[tuple[Any, asyncio.Future[Any], float]]) -> None:
        items = [item for item, _, _ in queued]
        waiting = [future for _, future, _ in queued]
        request = env_pb2.SessionRequest()
        getattr(request, kind).episodes.extend(items)  # one copy (nesting constructors copies twice)
        try:
            self._send(request, lambda outcome: _deliver(outcome, kind, waiting), queued[0][2])
        except Exception as exc:  # e.g. a broken stream: raise it in the callers, never leave them waiting
            _settle(waiting, exc)

    async def step_many(
        self, actions: Mapping[str, Actions], *, raise_errors: bool = True
    ) -> dict[str, t.EpisodeStep | PalaestraError]:
        """Step many episodes in ONE message. Per-episode failures raise (or come back as errors)."""
        request = env_pb2.StepRequest()
        for episode_id, action in actions.items():
            _fill_actions(request.episodes.add(episode_id=episode_id), action)
        reply = await self._call(env_pb2.SessionRequest(step=request))
        results: dict[str, t.EpisodeStep | PalaestraError] = {}
        for episode in reply.step.episodes:
            if episode.HasField("error"):
                if raise_errors:
                    raise _error_from_status(episode.error)
                results[episode.episode_id] = _error_from_status(episode.error)
            else:
                results[episode.episode_id] = wire.episode_step_from_proto(episode)
        return results

    async def step_batch(self, actions: Mapping[str, Actions]) -> env_pb2.StepResponse:
        """Like step_many but returns the raw reply, for hot loops that read tensors directly."""
        request = env_pb2.StepRequest()
        for episode_id, action in actions.items():
            _fill_actions(request.episodes.add(episode_id=episode_id), action)
        return (await self._call(env_pb2.SessionRequest(step=request))).step

    async def close(self, episode_ids: str | Sequence[str]) -> list[t.EpisodeSummary]:
        ids = [episode_ids] if isinstance(episode_ids, str) else list(episode_ids)
        reply = await self._call(env_pb2.SessionRequest(close=env_pb2.CloseRequest(episode_ids=ids)))
        self._live.difference_update(ids)
        for episode_id in ids:
            self._lost.pop(episode_id, None)
        return [wire.summary_from_proto(s) for s in reply.close.summaries]

    async def episode(self, env_id: str, **open_args: Any) -> AsyncEpisode:
        [first] = await self.open(env_id, **open_args)
        return AsyncEpisode(self, first)

    # ------------------------------------------------------------ catalog

    async def list_envs(self, tags: Sequence[str] = ()) -> list[t.EnvSpec]:
        reply = await self._unary_call(
            self.catalog.ListEnvironments, catalog_pb2.ListEnvironmentsRequest(tags=tags)
        )
        return [wire.spec_from_proto(s) for s in reply.environments]

    async def describe(self, env_id: str) -> t.EnvSpec:
        reply = await self._unary_call(
            self.catalog.DescribeEnvironment, catalog_pb2.DescribeEnvironmentRequest(env_id=env_id)
        )
        return wire.spec_from_proto(reply)

    async def server_info(self) -> catalog_pb2.ServerInfo:
        reply: catalog_pb2.ServerInfo = await self._unary_call(
            self.catalog.GetServerInfo, catalog_pb2.ServerInfoRequest()
        )
        return reply

    async def _unary_call(self, method: Any, request: Any) -> Any:
        if self._closed:
            raise PalaestraError(grpc.StatusCode.CANCELLED, "the client is closed")
        try:
            return await method(request, metadata=self.metadata or None, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise PalaestraError(exc.code(), exc.details() or "") from None

    async def aclose(self) -> None:
        """End the stream (the server closes its episodes) and the channel. Later calls raise CANCELLED."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        reader = self._reader
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._outbox is not None:
            self._outbox.end()  # what is queued is still written (steps queued now fail as CANCELLED)
        if reader is not None:
            # The stream ends once the server has read the end; a server that is gone gets 2 s.
            done, _ = await asyncio.wait([reader], timeout=2)
            if not done:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
        await self.channel.close()


class _Outbox:
    """The requests of one stream, as gRPC's writing task reads them (an iterator, not an async generator:
    a generator that gRPC abandons when the stream breaks complains as it is collected).

    It holds requests ready to go and "batches": the kinds ("step", "reset") of single-episode requests
    queued on the client. A batch becomes its request (through `send_batch`) only when the writer gets to
    it, so everything queued until then travels together. Cheaper than an asyncio.Queue plus a callback
    that fills it: the caller's hand-off wakes the writer directly."""

    def __init__(self, send_batch: Callable[[str], None]) -> None:
        self._send_batch = send_batch  # puts the batch's request here with put(), or answers it
        self._requests: deque[env_pb2.SessionRequest] = deque()
        self._batches: list[str] = []
        self._waiter: asyncio.Future[None] | None = None  # the writer, waiting for something to send
        self._ended = False

    def put(self, request: env_pb2.SessionRequest) -> None:
        self._requests.append(request)
        self._wake()

    def put_batch(self, kind: str) -> None:
        self._batches.append(kind)
        self._wake()

    def end(self, *, abandon: bool = False) -> list[str]:
        """No more requests: the writer finishes once it has sent what is here (aclose). With `abandon`
        (the stream is broken) it sends nothing more, and the batches not yet taken are returned."""
        self._ended = True
        batches = []
        if abandon:
            self._requests.clear()
            batches, self._batches = self._batches, []
        self._wake()
        return batches

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> _Outbox:
        return self

    async def __anext__(self) -> env_pb2.SessionRequest:
        while True:
            if self._requests:
                return self._requests.popleft()
            if self._batches:
                self._send_batch(self._batches.pop(0))
                continue
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None


class StreamBroken(PalaestraError):
    """The session stream ended before this request's reply came (the server restarted, died, drained)."""


def _ignore(outcome: Any) -> None:
    pass


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    host = host.removeprefix("ipv4:").removeprefix("ipv6:").removeprefix("dns:///")
    return host in ("localhost", "::1") or host.startswith("127.") or host.startswith("unix:")


def episode_ids(request: env_pb2.SessionRequest) -> list[str]:
    """The episodes a step, reset or close request names (none for other requests)."""
    kind = request.WhichOneof("request")
    if kind == "close":
        return list(request.close.episode_ids)
    if kind in ("step", "reset"):
        return [item.episode_id for item in getattr(request, kind).episodes]
    return []


def _lost_reply(request: env_pb2.SessionRequest, failure: t.InfraFailure) -> env_pb2.SessionResponse | None:
    """The answer for a step, reset or close of lost episodes: each ends with an infrastructure failure
    (a close returns a summary saying so). None for other requests (an open may simply be retried)."""
    kind = request.WhichOneof("request")
    reply = env_pb2.SessionResponse(request_id=request.request_id)
    proto_failure = types_pb2.InfraFailure(source=failure.source, message=failure.message)
    if kind in ("step", "reset"):
        episodes = getattr(reply, kind).episodes
        for episode_id in episode_ids(request):
            episodes.add(episode_id=episode_id, done=True, infra_failure=proto_failure)
        return reply
    if kind == "close":
        for episode_id in episode_ids(request):
            reply.close.summaries.add(
                episode_id=episode_id, infra_failure=proto_failure, close_reason="connection_lost"
            )
        return reply
    return None


def _lost_result(kind: str, episode_id: str, failure: t.InfraFailure) -> types_pb2.EpisodeResult:
    """The answer for a step or reset of one lost episode (see _lost_reply)."""
    request = env_pb2.SessionRequest()
    getattr(request, kind).episodes.add(episode_id=episode_id)
    reply = _lost_reply(request, failure)
    assert reply is not None
    result: types_pb2.EpisodeResult = getattr(reply, kind).episodes[0]
    return result


def _checked(reply: env_pb2.SessionResponse) -> env_pb2.SessionResponse:
    if reply.WhichOneof("response") == "error":
        raise _error_from_status(reply.error)
    return reply


def _settle(futures: Sequence[asyncio.Future[Any]], outcome: Any) -> None:
    """Give every future still waiting (its caller may have been cancelled) the outcome or the error."""
    for future in futures:
        if not future.done():
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


def _deliver(
    outcome: env_pb2.SessionResponse | PalaestraError, kind: str, waiting: list[asyncio.Future[Any]]
) -> None:
    """Hand each coalesced step or reset its own result: the reply lists them in request order."""
    if isinstance(outcome, PalaestraError) or outcome.WhichOneof("response") == "error":
        _settle(
            waiting, outcome if isinstance(outcome, PalaestraError) else _error_from_status(outcome.error)
        )
        return
    episodes = getattr(outcome, kind).episodes
    if len(episodes) != len(waiting):
        error = f"the server answered {len(episodes)} of {len(waiting)} {kind}s in one message"
        _settle(waiting, PalaestraError(grpc.StatusCode.INTERNAL, error))
        return
    for future, episode in zip(waiting, episodes, strict=True):
        if not future.done():  # its caller may have been cancelled
            future.set_result(episode)


def _single(episode: types_pb2.EpisodeResult) -> t.EpisodeStep:
    if episode.HasField("error"):
        raise _error_from_status(episode.error)
    return wire.episode_step_from_proto(episode)


class AsyncEpisode:
    """One remote episode as an object."""

    def __init__(self, client: AsyncClient, first: t.EpisodeStep) -> None:
        self.client = client
        self.id = first.episode_id
        self.last = first

    async def step(self, action: Actions) -> t.EpisodeStep:
        self.last = await self.client.step(self.id, action)
        return self.last

    async def reset(self, seed: int | None = None) -> t.EpisodeStep:
        self.last = await self.client.reset(self.id, seed=seed)
        return self.last

    async def close(self) -> t.EpisodeSummary:
        [summary] = await self.client.close(self.id)
        return summary


FORKED_CHILD = (
    "this process was forked from one with an open Palaestra client, and gRPC's asyncio stack cannot be "
    "used in such a child (a new channel hangs). Use the synchronous Client there (it runs its channel in a "
    "helper process), or the 'spawn' or 'forkserver' start method (multiprocessing.get_context('forkserver'))"
)


def _refuse_in_forked_child() -> None:
    if _forked_with_open_clients:
        raise PalaestraError(grpc.StatusCode.FAILED_PRECONDITION, FORKED_CHILD)


class Client:
    """The synchronous client: an `AsyncClient` driven on a private event loop thread.

    Fork: gRPC's asyncio stack does not survive `fork` (in a child forked from a process that used gRPC,
    even a new channel hangs). A Client used in a forked child, or made in a child forked while a client
    was open, rebuilds its channel in a helper process (`agents/forked.py`): it works as before, at one
    more local round trip per call. Episodes the parent opened stay the parent's (NOT_FOUND in the child).
    `AsyncClient` cannot do this and refuses with FAILED_PRECONDITION; the `spawn` and `forkserver` start
    methods (SB3's default) need none of it.
    """

    def __init__(self, address: str | Sequence[str], **kwargs: Any) -> None:
        """`address`: one server, or several replicas / a directory as `AsyncClient` takes them."""
        self._address, self._kwargs = address, kwargs
        self._closed = False
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._spawned: SpawnedClient | None = None
        self._single_stream = False
        if _forked_with_open_clients:
            self._spawn()
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="palaestra-client", daemon=True)
        self._thread.start()
        self._aio: AsyncClient = asyncio.run_coroutine_threadsafe(
            self._make(self._address, self._kwargs), self._loop
        ).result()
        # One stream of its own (not a MultiAsyncClient): send and step may skip the coroutine (_direct).
        self._single_stream = type(self._aio) is AsyncClient

    def _spawn(self) -> None:
        """The channel, rebuilt in a helper process (this one is a forked child: see the class doc)."""
        from palaestra.agents.forked import SpawnedClient

        self._pid = os.getpid()
        self._spawned = SpawnedClient(self._address, self._kwargs)

    @staticmethod
    async def _make(address: str | Sequence[str], kwargs: dict[str, Any]) -> AsyncClient:
        return AsyncClient(address, **kwargs)

    @property
    def aio(self) -> AsyncClient:
        """The AsyncClient this client drives (not in a forked child, where it lives in a helper process)."""
        if self._spawned is not None or self._pid != os.getpid():
            raise PalaestraError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "in a forked child this client's channel lives in a helper process: use the Client's methods",
            )
        return self._aio

    @property
    def closed(self) -> bool:
        return self._closed

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`AsyncClient.<method>(*args, **kwargs)`, run on the client's loop (or in its helper process)."""
        self._check_usable()
        if self._spawned is not None:
            return self._spawned.call(method, args, kwargs)
        coro = getattr(self._aio, method)(*args, **kwargs)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _check_usable(self) -> None:
        if self._closed:
            raise PalaestraError(grpc.StatusCode.CANCELLED, "the client is closed")
        if self._pid != os.getpid():  # forked: the loop thread and the channel stayed in the parent
            self._spawn()

    def _direct(self) -> bool:
        """Whether a call may go straight onto the loop's stream (`_on_loop`): not in a forked child (its
        helper process has the stream) nor over several replicas (MultiAsyncClient places each request)."""
        self._check_usable()
        return self._spawned is None and self._single_stream

    def _on_loop(self, start: Callable[[Callable[[Any], None]], None]) -> Any:
        """Run `start(deliver)` on the client's loop and wait here for what it delivers (or raises).

        The hot path of send and step: one thread hand-off each way (call_soon_threadsafe, then a
        SimpleQueue that the reply callback fills), with no coroutine, Task or concurrent Future between
        (run_coroutine_threadsafe: RemoteVectorEnv's 8-episode step took about 70 us longer)."""
        box: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def begin() -> None:
            try:
                start(box.put)
            except Exception as exc:  # e.g. the client closed, or a request over the size limit
                box.put(exc)

        self._loop.call_soon_threadsafe(begin)
        outcome = box.get()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_client()

    def open(self, env_id: str, **kwargs: Any) -> list[t.EpisodeStep]:
        return self._call("open", env_id, **kwargs)  # type: ignore[no-any-return]

    def reset(self, episode_id: str, **kwargs: Any) -> t.EpisodeStep:
        return self._call("reset", episode_id, **kwargs)  # type: ignore[no-any-return]

    def reset_many(self, episode_ids: Sequence[str]) -> list[t.EpisodeStep]:
        return self._call("reset_many", episode_ids)  # type: ignore[no-any-return]

    def step(self, episode_id: str, action: Actions) -> t.EpisodeStep:
        if not self._direct():
            return self._call("step", episode_id, action)  # type: ignore[no-any-return]
        item = _step_item(episode_id, action)
        aio = self._aio  # steps from several threads in one loop turn still share a message
        future = self._on_loop(lambda deliver: aio._enqueue("step", item).add_done_callback(deliver))
        return _single(future.result())

    def step_many(
        self, actions: Mapping[str, Actions], **kwargs: Any
    ) -> dict[str, t.EpisodeStep | PalaestraError]:
        return self._call("step_many", actions, **kwargs)  # type: ignore[no-any-return]

    def send(self, request: env_pb2.SessionRequest) -> env_pb2.SessionResponse:
        if not self._direct():
            return self._call("send", request)  # type: ignore[no-any-return]
        aio = self._aio
        return _checked(self._on_loop(lambda deliver: aio._send(request, deliver)))

    def step_batch(self, actions: Mapping[str, Actions]) -> env_pb2.StepResponse:
        return self._call("step_batch", actions)  # type: ignore[no-any-return]

    def close(self, episode_ids: str | Sequence[str]) -> list[t.EpisodeSummary]:
        return self._call("close", episode_ids)  # type: ignore[no-any-return]

    def episode(self, env_id: str, **kwargs: Any) -> Episode:
        [first] = self.open(env_id, **kwargs)
        return Episode(self, first)

    def list_envs(self, tags: Sequence[str] = ()) -> list[t.EnvSpec]:
        return self._call("list_envs", tags)  # type: ignore[no-any-return]

    def describe(self, env_id: str) -> t.EnvSpec:
        return self._call("describe", env_id)  # type: ignore[no-any-return]

    def server_info(self) -> catalog_pb2.ServerInfo:
        return self._call("server_info")  # type: ignore[no-any-return]

    def close_client(self) -> None:
        """Close the stream and channel; later calls raise CANCELLED (they never hang)."""
        if self._closed:
            return
        if self._spawned is not None:
            self._spawned.close()
        elif self._pid == os.getpid() and self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._aio.aclose(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()  # its epoll and self-pipe descriptors, else held until exit
        self._closed = True


class Episode:
    """One remote episode as an object (synchronous)."""

    def __init__(self, client: Client, first: t.EpisodeStep) -> None:
        self.client = client
        self.id = first.episode_id
        self.last = first

    def step(self, action: Actions) -> t.EpisodeStep:
        self.last = self.client.step(self.id, action)
        return self.last

    def reset(self, seed: int | None = None) -> t.EpisodeStep:
        self.last = self.client.reset(self.id, seed=seed)
        return self.last

    def close(self) -> t.EpisodeSummary:
        [summary] = self.client.close(self.id)
        return summary
