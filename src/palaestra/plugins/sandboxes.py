"""Built-in plugin: the `docker` and `local` sandbox backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from palaestra.hookspecs import hookimpl
from palaestra.sandbox.api import SandboxBackend
from palaestra.sandbox.docker_backend import DockerBackend
from palaestra.sandbox.local import LocalBackend

BUILTIN_BACKENDS: dict[str, Callable[[dict[str, Any]], SandboxBackend]] = {
    "docker": DockerBackend,
    "local": LocalBackend,
}


@hookimpl
def palaestra_register_sandbox_backends(registry: Any) -> None:
    for name, factory in BUILTIN_BACKENDS.items():
        registry.add(name, factory)
