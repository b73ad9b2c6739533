"""Sandboxes for untrusted code: the API (`api`), the manager (`manager`) and the built-in backends."""

from palaestra.sandbox.api import (
    ExecResult,
    ExecStatus,
    Limits,
    Profile,
    Sandbox,
    SandboxBackend,
    SandboxError,
)

__all__ = ["ExecResult", "ExecStatus", "Limits", "Profile", "Sandbox", "SandboxBackend", "SandboxError"]
