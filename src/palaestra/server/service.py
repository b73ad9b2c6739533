"""The gRPC servicers: the catalog, the Session stream and its unary mirror."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

import palaestra
from palaestra import wire
from palaestra.pluginmanager import Plugins, PluginState
from palaestra.registry import EnvUnavailable, UnknownEnvironment
from palaestra.server.auth import Authenticator, Principal
from palaestra.server.columnar import VECTOR_KINDS
from palaestra.server.errors import ServiceError, internal_status
from palaestra.server.runtime import Runtime
from palaestra.v1 import catalog_pb2, catalog_pb2_grpc, env_pb2, env_pb2_grpc

log = logging.getLogger("palaestra.server")

CAPABILITIES = [
    "session-stream",
    "batched-step",
    "unary-mirror",
    "multi-agent",
    "reward-components",
    "checklists",
    "vector-step",
]


class CatalogService(catalog_pb2_grpc.EnvCatalogServicer):
    def __init__(self, runtime: Runtime, auth: Authenticator | None = None) -> None:
        self.runtime = runtime
        self.auth = auth or Authenticator(runtime.config)

    async def ListEnvironments(
        self, request: catalog_pb2.ListEnvironmentsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListEnvironmentsResponse:
        wanted = set(request.tags)
        specs = [r.spec for r in self.runtime.plugins.envs if wanted <= set(r.spec.tags)]
        return catalog_pb2.ListEnvironmentsResponse(
            environments=[wire.spec_to_proto(self.runtime.catalog_spec(s)) for s in specs]
        )

    async def DescribeEnvironment(
        self, request: catalog_pb2.DescribeEnvironmentRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.EnvSpec:
        try:
            return wire.spec_to_proto(
                self.runtime.catalog_spec(self.runtime.plugins.envs.get(request.env_id).spec)
            )
        except UnknownEnvironment as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise  # unreachable: abort raises
        except EnvUnavailable as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise  # unreachable: abort raises

    async def GetServerInfo(
        self, request: catalog_pb2.ServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ServerInfo:
        config = self.runtime.config
        principal = self.auth.identify(context)
        return catalog_pb2.ServerInfo(
            protocol_version=palaestra.PROTOCOL_VERSION,
            server_version=palaestra.__version__,
            capabilities=CAPABILITIES,
            plugins=plugin_infos(self.runtime.plugins),
            max_episodes=config.max_episodes,
            max_episodes_per_client=principal.max_episodes,
            max_sandboxes_per_client=principal.max_sandboxes,
            max_message_bytes=config.max_message_bytes,
            max_request_bytes=config.max_request_bytes,
            principal=principal.name,
            episodes_held=self.runtime.table.held_by(principal.name),
            stream_idle_timeout_s=config.stream_idle_timeout_s,
            isolation={r.spec.id: self.runtime.isolation_of(r.spec) for r in self.runtime.plugins.envs},
        )


class EnvService(env_pb2_grpc.EnvServiceServicer):
    def __init__(self, runtime: Runtime, auth: Authenticator | None = None) -> None:
        self.runtime = runtime
        self.auth = auth or Authenticator(runtime.config)
        self.live_streams: set[str] = set()  # owners of the Session streams now open
        self.in_flight = 0  # requests being handled (stream and unary): a drain waits for 0
        self._closing: dict[asyncio.Task[None], str] = {}  # closing the episodes of ended streams

    # ------------------------------------------------------------ the stream

    async def Session(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[env_pb2.SessionResponse]:
        stream = _Stream(f"stream:{uuid.uuid4().hex}", self.auth.identify(context))
        self.live_streams.add(stream.owner)
        # However the call ends (the client closes or dies, a keepalive finds the peer gone, a deadline, the
        # server stops), this fires and the stream's episodes close: a generator's `finally` may never run.
        context.add_done_callback(lambda _call: self._stream_ended(stream.owner))
        reader = asyncio.create_task(self._read_requests(request_iterator, stream))
        watchdog = asyncio.create_task(self._watch_idle(stream))
        try:
            while (reply := await stream.replies.get()) is not None:
                yield reply
            if not watchdog.done():  # (an idle stream ends without waiting for the client's side)
                await reader  # surfaces a failure of the reader itself
        finally:
            reader.cancel()
            watchdog.cancel()
            self._stream_ended(stream.owner)

    def _stream_ended(self, owner: str) -> None:
        if owner not in self.live_streams:
            return
        self.live_streams.discard(owner)
        held = len(self.runtime.table.owned_by(owner))
        if held:
            log.info("Session stream %s ended: closing its %d episodes", owner, held)
        task = asyncio.get_running_loop().create_task(self.runtime.close_owned(owner, "stream_ended"))
        self._closing[task] = owner  # a reference, so the task is not collected before it ran
        task.add_done_callback(self._closing.pop)

    async def close_orphans(self) -> int:
        """Close stream episodes whose stream is gone (a safety net under the done callback)."""
        streams = {o for o in self.runtime.table.owners() if o.startswith("stream:")}
        orphans = streams - self.live_streams - set(self._closing.values())
        for owner in orphans:
            log.warning("closing episodes of ended stream %s", owner)
            await self.runtime.close_owned(owner, "stream_ended")
        return len(orphans)

    async def _watch_idle(self, stream: _Stream) -> None:
        """End a stream that has sent nothing for stream_idle_timeout_s and waits on nothing."""
        limit = self.runtime.config.stream_idle_timeout_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.05, min(limit / 4, 30.0)))
            if not stream.in_flight and loop.time() - stream.last_request > limit:
                log.info("ending Session stream %s: idle for %.0f s", stream.owner, limit)
                reply = env_pb2.SessionResponse()
                message = f"the stream sent no request for {limit:g} s; its episodes are closed"
                reply.error.CopyFrom(ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, message).to_status())
                stream.replies.put_nowait(reply)
                stream.replies.put_nowait(None)
                return

    async def _read_requests(self, requests: AsyncIterator[Any], stream: _Stream) -> None:
        """Handle each request as its own task, so a slow episode never holds up the others.
        Steps of one episode still run in order: the episode's lock is fair. A request for inline
        environments, with nothing else in flight, is handled at once: a task would only add cost."""
        loop = asyncio.get_running_loop()
        try:
            async for request in requests:
                stream.last_request = loop.time()
                if isinstance(request, BadMessage):
                    stream.replies.put_nowait(self._refused(request))
                    continue
                if not stream.in_flight and (
                    request.WhichOneof("request") in VECTOR_KINDS
                    or self.runtime.runs_inline(request, stream.owner)
                ):
                    await self._handle(request, stream)
                    continue
                task = asyncio.create_task(self._handle(request, stream))
                stream.in_flight.add(task)
                task.add_done_callback(stream.in_flight.discard)
            if stream.in_flight:
                await asyncio.gather(*stream.in_flight)
        except grpc.aio.AioRpcError as exc:
            log.info("Session stream %s broke: %s", stream.owner, exc.code().name)
        finally:
            for task in stream.in_flight:
                task.cancel()
            stream.replies.put_nowait(None)

    def _refused(self, bad: BadMessage) -> env_pb2.SessionResponse:
        log.warning("refused a Session message: %s", bad.error.message)
        self.runtime.metrics.errors.labels(bad.error.code.name).inc()
        reply = env_pb2.SessionResponse(request_id=bad.request_id)
        reply.error.CopyFrom(bad.error.to_status())
        return reply

    async def _handle(self, request: env_pb2.SessionRequest, stream: _Stream) -> None:
        reply = env_pb2.SessionResponse(request_id=request.request_id)
        kind = request.WhichOneof("request")
        owner = stream.owner
        self.in_flight += 1
        try:
            if kind == "open":
                reply.open.CopyFrom(await self.runtime.open(request.open, owner, stream.principal))
            elif kind == "reset":
                reply.reset.SetInParent()  # filled in place (an empty request still gets a reset reply)
                await self.runtime.reset(request.reset, owner, reply.reset)
            elif kind == "step":
                reply.step.SetInParent()
                await self.runtime.step(request.step, owner, reply.step)
            elif kind == "close":
                reply.close.CopyFrom(await self.runtime.close(request.close, owner))
            elif kind == "vector_open":
                vectors = self.runtime.vectors
                reply.vector.CopyFrom(await vectors.open(request.vector_open, owner, stream.principal))
            elif kind == "vector_reset":
                reply.vector.CopyFrom(await self.runtime.vectors.reset(request.vector_reset, owner))
            elif kind == "vector_step":
                reply.vector.CopyFrom(await self.runtime.vectors.step(request.vector_step, owner))
            elif kind == "vector_close":
                reply.vector_close.CopyFrom(await self.runtime.vectors.close(request.vector_close, owner))
            else:
                raise ServiceError(
                    grpc.StatusCode.INVALID_ARGUMENT, "the request carries none of open, reset, step, close"
                )
        except ServiceError as exc:
            self.runtime.metrics.errors.labels(exc.code.name).inc()
            reply.error.CopyFrom(exc.to_status())
        except Exception as exc:  # a bug must not end the stream or the server
            log.exception("request %s (%s) failed", request.request_id, kind)
            self.runtime.metrics.errors.labels("INTERNAL").inc()
            reply.error.CopyFrom(internal_status(f"internal error handling {kind}: {exc}"))
        finally:
            self.in_flight -= 1
        stream.replies.put_nowait(await self._within_limit(reply))

    async def _within_limit(self, reply: env_pb2.SessionResponse) -> env_pb2.SessionResponse:
        """A reply too large for the transport would end the whole stream: refuse it in-band instead
        (episodes it opened are closed, since the client never learns their ids)."""
        limit = self.runtime.config.max_message_bytes
        if reply.ByteSize() <= limit:
            return reply
        for episode in reply.open.episodes:
            await self.runtime.close_episode(episode.episode_id, "reply_too_large")
        size = reply.ByteSize()
        refused = env_pb2.SessionResponse(request_id=reply.request_id)
        message = (
            f"the reply would be {size} bytes, above the server's message limit of {limit} bytes; "
            "ask for fewer episodes per message"
        )
        refused.error.CopyFrom(ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message).to_status())
        log.warning("refused a %d-byte reply to request %s (limit %d)", size, reply.request_id, limit)
        return refused

    # ------------------------------------------------------------ the unary mirror

    async def Open(
        self, request: env_pb2.OpenRequest, context: grpc.aio.ServicerContext
    ) -> env_pb2.OpenResponse:
        principal = self.auth.identify(context)
        return await self._unary(
            lambda r, owner: self.runtime.open(r, owner, principal), request, context, principal
        )

    async def Reset(
        self, request: env_pb2.ResetRequest, context: grpc.aio.ServicerContext
    ) -> env_pb2.ResetResponse:
        return await self._unary(self.runtime.reset, request, context)

    async def Step(
        self, request: env_pb2.StepRequest, context: grpc.aio.ServicerContext
    ) -> env_pb2.StepResponse:
        return await self._unary(self.runtime.step, request, context)

    async def CloseEpisodes(
        self, request: env_pb2.CloseRequest, context: grpc.aio.ServicerContext
    ) -> env_pb2.CloseResponse:
        return await self._unary(self.runtime.close, request, context)

    async def VectorOpen(
        self, request: env_pb2.VectorOpenRequest, context: grpc.aio.ServicerContext
    ) -> env_pb2.VectorResult:
        principal = self.auth.identify(context)
        return await self._unary(
            lambda r, owner: self.runtime.vectors.open(r, owner, principal), request, context, principal
        )

    async def VectorReset(
        self, request: env_pb2.VectorResetRequest, context: grpc.aio.ServicerContext
    ) -> env_pb2.VectorResult:
        return await self._unary(self.runtime.vectors.reset, request, context)

    async def VectorStep(
        self, request: env_pb2.VectorStepRequest, context: grpc.aio.ServicerContext
    ) -> env_pb2.VectorResult:
        return await self._unary(self.runtime.vectors.step, request, context)

    async def VectorClose(
        self, request: env_pb2.VectorCloseRequest, context: grpc.aio.ServicerContext
    ) -> env_pb2.VectorCloseResponse:
        return await self._unary(self.runtime.vectors.close, request, context)

    async def _unary(
        self,
        method: Callable[[Any, str], Awaitable[Any]],
        request: Any,
        context: grpc.aio.ServicerContext,
        principal: Principal | None = None,
    ) -> Any:
        owner = f"unary:{(principal or self.auth.identify(context)).name}"
        self.in_flight += 1
        try:
            return await method(request, owner)
        except ServiceError as exc:
            self.runtime.metrics.errors.labels(exc.code.name).inc()
            await context.abort(exc.code, exc.message)
        finally:
            self.in_flight -= 1


class _Stream:
    """One Session stream: its owner id, its caller, its replies, its requests in flight."""

    def __init__(self, owner: str, principal: Principal) -> None:
        self.owner = owner
        self.principal = principal
        self.replies: asyncio.Queue[env_pb2.SessionResponse | None] = asyncio.Queue()
        self.in_flight: set[asyncio.Task[None]] = set()
        self.last_request = asyncio.get_running_loop().time()


class BadMessage:
    """A Session message that was not decoded (too large for the application limit, or malformed):
    it is answered in-band, with its request id where that could be read, and the stream goes on."""

    def __init__(self, request_id: str, error: ServiceError) -> None:
        self.request_id = request_id
        self.error = error


def tolerant_decoder(limit: int) -> Callable[[bytes], Any]:
    """A Session request decoder that never raises: a gRPC deserializer that raises ends the whole
    stream (and every episode on it) with UNKNOWN and a traceback."""
    parse = env_pb2.SessionRequest.FromString

    def decode(data: bytes) -> Any:
        if len(data) > limit:
            message = (
                f"the request is {len(data)} bytes, above the server's limit of {limit} bytes per request; "
                "send fewer episodes or smaller actions per message"
            )
            return BadMessage(
                _peek_request_id(data), ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
            )
        try:
            return parse(data)
        except Exception as exc:
            message = f"the message is not a palaestra.v1.SessionRequest: {type(exc).__name__}: {exc}"
            return BadMessage(_peek_request_id(data), ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message))

    return decode


def _peek_request_id(data: bytes) -> str:
    """Read field 1 (request_id) if the message starts with it, as a SessionRequest does; else ""."""
    if len(data) < 2 or data[0] != 0x0A:
        return ""
    length, shift, position = 0, 0, 1
    while position < len(data) and position < 6:
        byte = data[position]
        length |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            break
        shift += 7
    if length > 256 or position + length > len(data):
        return ""
    try:
        return data[position : position + length].decode()
    except UnicodeDecodeError:
        return ""


def plugin_infos(plugins: Plugins) -> list[catalog_pb2.PluginInfo]:
    """Every plugin the server found: loaded ones with their environments, then unavailable and failed
    ones with the reason they serve nothing."""
    infos = [
        catalog_pb2.PluginInfo(
            name=p.name, version=p.version, environments=p.environments, state=catalog_pb2.PLUGIN_STATE_LOADED
        )
        for p in plugins.loaded.values()
    ]
    for failure in plugins.failures.values():
        state = (
            catalog_pb2.PLUGIN_STATE_UNAVAILABLE
            if failure.state is PluginState.UNAVAILABLE
            else catalog_pb2.PLUGIN_STATE_FAILED
        )
        error = f"{failure.stage}: {failure.error}"
        infos.append(
            catalog_pb2.PluginInfo(name=failure.name, version=failure.version, state=state, error=error)
        )
    return infos
