"""Prometheus metrics of one server (its own registry, so several servers can live in one process)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

if TYPE_CHECKING:
    from palaestra.server.auth import Authenticator


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.episodes_open = Gauge(
            "palaestra_episodes_open", "Episodes currently open", registry=self.registry
        )
        self.episodes_opened = Counter(
            "palaestra_episodes_opened", "Episodes opened", ["env"], registry=self.registry
        )
        self.steps = Counter("palaestra_steps", "Environment steps", ["env"], registry=self.registry)
        self.step_latency = Histogram(
            "palaestra_step_latency_seconds",
            "Time inside the environment per step",
            ["env"],
            buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=self.registry,
        )
        self.errors = Counter(
            "palaestra_errors", "Request errors by status code", ["code"], registry=self.registry
        )
        self.infra_failures = Counter(
            "palaestra_infra_failures",
            "Episodes ended by an infrastructure failure",
            ["env", "source"],
            registry=self.registry,
        )

        self._step_meters: dict[str, tuple[Any, Any]] = {}

    def step_meters(self, env_id: str) -> tuple[Any, Any]:
        """The step counter and latency histogram of one env, looked up once: `labels()` takes a lock
        and builds a key on every call, which shows up at tens of thousands of steps per second."""
        meters = self._step_meters.get(env_id)
        if meters is None:
            meters = (self.steps.labels(env_id), self.step_latency.labels(env_id))
            self._step_meters[env_id] = meters
        return meters

    def serve(self, host: str, port: int, auth: Authenticator | None = None) -> WSGIServer:
        """Serve /metrics over HTTP on its own thread. With tokens configured, the endpoint wants the
        same `Authorization: Bearer <token>` as the gRPC calls (401 otherwise)."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if (
                auth is not None
                and auth.enabled
                and auth.from_header(environ.get("HTTP_AUTHORIZATION")) is None
            ):
                start_response(
                    "401 Unauthorized", [("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")]
                )
                return [b"missing or wrong bearer token\n"]
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]

        server = make_server(host, port, app, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="palaestra-metrics", daemon=True).start()
        return server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass
