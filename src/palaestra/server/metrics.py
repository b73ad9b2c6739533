"""Prometheus metrics of one server (its own registry, so several servers can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


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

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
