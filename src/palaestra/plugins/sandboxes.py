"""Built-in plugin: registers the sandbox layer's `docker` and `local` backends through the hook."""

from __future__ import annotations

from typing import Any

from palaestra.hookspecs import hookimpl
from palaestra.sandbox.builtin import BUILTIN_BACKENDS


@hookimpl
def palaestra_register_sandbox_backends(registry: Any) -> None:
    for name, factory in BUILTIN_BACKENDS.items():
        registry.add(name, factory)
