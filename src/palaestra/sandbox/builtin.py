"""The sandbox backends that ship with palaestra, by name.

The sandbox layer knows them so that `SandboxManager.create_default` works without plugins or a server;
a server gets them (and third-party backends) through the `palaestra_register_sandbox_backends` hook,
which the built-in `palaestra.plugins.sandboxes` plugin implements with this table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from palaestra.sandbox.api import SandboxBackend
from palaestra.sandbox.docker_backend import DockerBackend
from palaestra.sandbox.local import LocalBackend

BUILTIN_BACKENDS: dict[str, Callable[[dict[str, Any]], SandboxBackend]] = {
    "docker": DockerBackend,
    "local": LocalBackend,
}
