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
from palaestra.registry import UnknownEnvironment
from palaestra.server.errors import ServiceError, internal_status
from palaestra.server.runtime import Runtime
from palaestra.v1 import catalog_pb2, catalog_pb2_grpc, env_pb2, env_pb2_grpc

log = logging.getLogger("palaestra.server")

CLIENT_ID_METADATA = "x-palaestra-client"
CAPABILITIES = [
    "session-stream",
    "batched-step",
    "unary-mirror",
    "multi-agent",
    "reward-components",
    "checklists",
]


class CatalogService(catalog_pb2_grpc.EnvCatalogServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def ListEnvironments(
        self, request: catalog_pb2.ListEnvironmentsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListEnvironmentsResponse:
        wanted = set(request.tags)
        specs = [r.spec for r in self.runtime.plugins.envs if wanted <= set(r.spec.tags)]
        return catalog_pb2.ListEnvironmentsResponse(environments=[wire.spec_to_proto(s) for s in specs])

    async def DescribeEnvironment(
        self, request: catalog_pb2.DescribeEnvironmentRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.EnvSpec:
        try:
            return wire.spec_to_proto(self.runtime.plugins.envs.get(request.env_id).spec)
        except UnknownEnvironment as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise  # unreachable: abort raises

    async def GetServerInfo(
        self, request: catalog_pb2.ServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ServerInfo:
        config = self.runtime.config
        return catalog_pb2.ServerInfo(
            protocol_version=palaestra.PROTOCOL_VERSION,
            server_version=palaestra.__version__,
            capabilities=CAPABILITIES,
            plugins=[
                catalog_pb2.PluginInfo(name=p.name, version=p.version, environments=p.environments)
                for p in self.runtime.plugins.loaded.values()
            ],
            max_episodes=config.max_episodes,
            max_episodes_per_client=config.max_episodes_per_client,
        )


class EnvService(env_pb2_grpc.EnvServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    # ------------------------------------------------------------ the stream

    async def Session(
        self, request_iterator: AsyncIterator[env_pb2.SessionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[env_pb2.SessionResponse]:
        owner = f"stream:{uuid.uuid4().hex}"
        replies: asyncio.Queue[env_pb2.SessionResponse | None] = asyncio.Queue()
        reader = asyncio.create_task(self._read_requests(request_iterator, owner, replies))
        try:
            while (reply := await replies.get()) is not None:
                yield reply
            await reader  # surfaces a failure of the reader itself
        finally:
            reader.cancel()
            await self.runtime.close_owned(owner, "stream_ended")

    async def _read_requests(
        self,
        requests: AsyncIterator[env_pb2.SessionRequest],
        owner: str,
        replies: asyncio.Queue[env_pb2.SessionResponse | None],
    ) -> None:
        """Handle each request as its own task, so a slow episode never holds up the others.
        Steps of one episode still run in order: the episode's lock is fair. A request for inline
        environments, with nothing else in flight, is handled at once: a task would only add cost."""
        in_flight: set[asyncio.Task[None]] = set()
        try:
            async for request in requests:
                if not in_flight and self.runtime.runs_inline(request, owner):
                    await self._handle(request, owner, replies)
                    continue
                task = asyncio.create_task(self._handle(request, owner, replies))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)
        finally:
            for task in in_flight:
                task.cancel()
            replies.put_nowait(None)

    async def _handle(
        self,
        request: env_pb2.SessionRequest,
        owner: str,
        replies: asyncio.Queue[env_pb2.SessionResponse | None],
    ) -> None:
        reply = env_pb2.SessionResponse(request_id=request.request_id)
        kind = request.WhichOneof("request")
        try:
            if kind == "open":
                reply.open.CopyFrom(await self.runtime.open(request.open, owner))
            elif kind == "reset":
                reply.reset.CopyFrom(await self.runtime.reset(request.reset, owner))
            elif kind == "step":
                reply.step.CopyFrom(await self.runtime.step(request.step, owner))
            elif kind == "close":
                reply.close.CopyFrom(await self.runtime.close(request.close, owner))
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
        replies.put_nowait(reply)

    # ------------------------------------------------------------ the unary mirror

    async def Open(
        self, request: env_pb2.OpenRequest, context: grpc.aio.ServicerContext
    ) -> env_pb2.OpenResponse:
        return await self._unary(self.runtime.open, request, context)

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

    async def _unary(
        self, method: Callable[[Any, str], Awaitable[Any]], request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        try:
            return await method(request, unary_owner(context))
        except ServiceError as exc:
            self.runtime.metrics.errors.labels(exc.code.name).inc()
            await context.abort(exc.code, exc.message)


def unary_owner(context: grpc.aio.ServicerContext) -> str:
    """Unary episodes belong to the client id the caller names, or else to its connection's peer."""
    for key, value in context.invocation_metadata() or ():
        if key == CLIENT_ID_METADATA:
            return f"unary:{value}"
    return f"unary:{context.peer()}"
