"""Assembling and running a Palaestra server: plugins, sandboxes, gRPC services, health, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from palaestra.dashboard.attach import attach as attach_extras
from palaestra.pluginmanager import Plugins, load_plugins
from palaestra.server.auth import Authenticator
from palaestra.server.config import ServerConfig
from palaestra.server.runtime import Runtime
from palaestra.server.service import CatalogService, EnvService, tolerant_decoder
from palaestra.v1 import catalog_pb2, env_pb2, env_pb2_grpc
from palaestra.v1 import catalog_pb2_grpc as catalog_grpc

log = logging.getLogger("palaestra.server")

SERVICE_NAMES = (
    catalog_pb2.DESCRIPTOR.services_by_name["EnvCatalog"].full_name,
    env_pb2.DESCRIPTOR.services_by_name["EnvService"].full_name,
)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SESSION_METHOD = f"/{SERVICE_NAMES[1]}/Session"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a known bearer token (health checks stay open for probes); and gives the
    Session stream a decoder that never raises, so a bad message is answered in-band."""

    def __init__(self, auth: Authenticator, request_limit: int) -> None:
        self.auth = auth
        self.decode_session = tolerant_decoder(request_limit)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(f"/{HEALTH_SERVICE}/"):
            return handler
        if self.auth.enabled and self.auth.from_metadata(handler_call_details.invocation_metadata) is None:
            return _refusing_handler(handler)
        if method == SESSION_METHOD:
            return grpc.stream_stream_rpc_method_handler(
                handler.stream_stream,
                request_deserializer=self.decode_session,
                response_serializer=handler.response_serializer,
            )
        return handler


def _refusing_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    # A plain coroutine serves every call shape in grpc.aio (streams may use context.read/write).
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if hasattr(request, "__aiter__"):
            # Take the client's first message before refusing: aborting a stream whose first write is
            # still in flight can reach the client as INTERNAL instead of UNAUTHENTICATED.
            async for _ in request:
                break
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **codec)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **codec)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **codec)
    return grpc.unary_unary_rpc_method_handler(refuse, **codec)


def grpc_options(config: ServerConfig) -> list[tuple[str, Any]]:
    size = config.max_message_bytes
    keepalive_ms = int(config.keepalive_time_s * 1000)
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        # The server pings every peer; one that does not answer within the timeout is dead, and its
        # calls end (so its Session streams' episodes close).
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        # Any ping in flight (not only keepalive's) times out this fast; gRPC's default is a minute.
        ("grpc.http2.ping_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Clients ping every CLIENT_KEEPALIVE_S (10 s): accept pings that often without calling it abuse.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.min_ping_interval_without_data_ms", min(keepalive_ms, 10_000)),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_concurrent_streams", 1024),
    ]


class PalaestraServer:
    """One running server. `await start()`, then `await wait()` or `await stop()`."""

    def __init__(self, config: ServerConfig, plugins: Plugins | None = None) -> None:
        self.config = config
        self.plugins = plugins or load_plugins(
            config.plugin_modules,
            config.disabled_plugins,
            config.plugin_config,
            strict=config.strict_plugins or None,  # None: PALAESTRA_STRICT_PLUGINS decides
        )
        self.sandboxes = _make_sandbox_manager(self.plugins, config)
        self.runtime = Runtime(config, self.plugins, self.sandboxes)
        self.extras = attach_extras(self)  # the trajectory store and the dashboard, where configured
        self.health = HealthServicer()
        self.auth = Authenticator(config)
        self.env_service = EnvService(self.runtime, self.auth)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._metrics_http: Any = None

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    async def start(self) -> None:
        interceptors = [AuthInterceptor(self.auth, self.config.max_request_bytes)]
        server = grpc.aio.server(options=grpc_options(self.config), interceptors=interceptors)
        catalog_grpc.add_EnvCatalogServicer_to_server(CatalogService(self.runtime, self.auth), server)
        env_pb2_grpc.add_EnvServiceServicer_to_server(self.env_service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((*SERVICE_NAMES, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
        self.port = self._bind(server)
        if self.sandboxes is not None:
            await self.sandboxes.start()
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.config.metrics_port:
            self._metrics_http = self.runtime.metrics.serve(
                self.config.metrics_host, self.config.metrics_port, self.auth
            )
        if self.auth.enabled and not self.config.tls_cert:
            log.warning(
                "bearer tokens are checked but TLS is off: tokens travel in clear text "
                "(use --tls-cert/--tls-key, or keep the server on loopback)"
            )
        self._reaper = asyncio.create_task(self._reap_forever())
        log.info("serving %d environments on %s", len(self.plugins.envs), self.address)
        self.plugins.hook.palaestra_server_started(address=self.address, environments=self.plugins.envs.ids())

    def _bind(self, server: grpc.aio.Server) -> int:
        address = self.config.address
        if self.config.tls_cert:
            credentials = grpc.ssl_server_credentials(
                [(Path(self.config.tls_key).read_bytes(), Path(self.config.tls_cert).read_bytes())]
            )
            return server.add_secure_port(address, credentials)
        return server.add_insecure_port(address)

    async def _reap_forever(self) -> None:
        period = max(0.05, min(5.0, self.config.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            try:
                await self.runtime.reap_idle()
                await self.env_service.close_orphans()
                self.runtime.metrics.episodes_open.set(len(self.runtime.table))
            except Exception:
                log.exception("idle reaper failed")

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    def drain(self) -> None:
        """No new episodes from now on: opens are refused with UNAVAILABLE ("replica draining: open episodes
        on another replica"), while the open episodes go on to their end and health stays SERVING (they are
        still served). `palaestra cluster drain` does this to a replica; `stop` drains and then stops."""
        self.runtime.drained = True

    async def stop(self, grace: float | None = None) -> None:
        """Drain: health reports NOT_SERVING and new episodes are refused while the server keeps serving
        the requests in flight, for up to `grace` seconds (config grace_s); then the transport stops,
        every episode closes, sandboxes are freed."""
        if self._server is None:
            return
        grace = self.config.grace_s if grace is None else grace
        self.plugins.hook.palaestra_server_stopping()
        self.runtime.draining = True
        await self.health.enter_graceful_shutdown()
        if self._reaper is not None:
            self._reaper.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.env_service.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.env_service.in_flight:
            log.warning("drain: %d requests still in flight after %.0f s", self.env_service.in_flight, grace)
        await self._server.stop(min(1.0, grace))
        await self.runtime.close_all("shutdown")
        await self.extras.stop()  # after close_all: the episodes it closed are recorded too
        for endpoint in self.runtime.llm_endpoints.values():
            with contextlib.suppress(Exception):
                await endpoint.aclose()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        if self.sandboxes is not None:
            await self.sandboxes.shutdown()
        self.runtime.table.executor.shutdown(wait=False, cancel_futures=True)
        self._server = None


def _make_sandbox_manager(plugins: Plugins, config: ServerConfig) -> Any:
    """The sandbox manager for this server, or None where the sandbox layer is not installed."""
    try:
        from palaestra.sandbox.manager import SandboxManager
    except ImportError:
        log.warning("palaestra.sandbox.manager is unavailable: environments get no sandboxes")
        return None
    return SandboxManager.from_registry(plugins.sandbox_backends, config.sandbox)


class ServerThread:
    """A server on its own event loop in a background thread: for tests, benchmarks and `palaestra run`."""

    def __init__(self, config: ServerConfig, plugins: Plugins | None = None) -> None:
        self.config = config
        self._plugins = plugins
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="palaestra-server", daemon=True)
        self.server: PalaestraServer | None = None
        self._error: BaseException | None = None

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self

    @property
    def address(self) -> str:
        assert self.server is not None
        return self.server.address

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.server = PalaestraServer(self.config, self._plugins)
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        self._loop.run_forever()

    def stop(self, grace: float = 1.0) -> None:
        if self.server is None or not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.stop(grace), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()  # its epoll and self-pipe descriptors, else held until exit

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_for_run(record: Mapping[str, Any] | None = None) -> Iterator[str]:
    """An in-process server for one training run (a free loopback port, every installed plugin); yields its
    address. `record` ({"path", "kind", "model", "tags"}) makes it record every episode as the run's."""
    config = ServerConfig(host="127.0.0.1", port=0)
    if record and record.get("path"):
        run = {key: value for key, value in record.items() if key != "path"}
        config.store = {"path": str(record["path"]), "run": run}
    with ServerThread(config) as thread:
        yield thread.address


# Collect the youngest generation after this many new objects (Python's default: 700). A step allocates
# dozens of short-lived objects, so at the default the server collected every few steps; measured on
# batched echo steps (in-process, trajectory store on): 25.5 us per episode-step at 700, 22 us at 50,000.
GC_YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """For a `palaestra serve` process (never a user's process that runs a ServerThread): collect the young
    generation less often, and move everything built at start-up (plugins, registries) out of the
    collector's sight, so full collections walk only what the episodes made."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def serve(config: ServerConfig) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully (drain, close episodes, free sandboxes)."""
    server = PalaestraServer(config)
    await server.start()
    tune_garbage_collector()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("signal received: draining")
    finally:
        await server.stop()
