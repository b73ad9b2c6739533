"""The sandbox interface environments use to run untrusted code.

An environment leases a sandbox for its episode from the `SandboxManager` it finds in its
`EnvContext`, writes files into the sandbox's work directory, executes programs there and releases the
sandbox when the episode closes. Backends (Docker, local processes, third-party ones) implement
`SandboxBackend` and are contributed through the `palaestra_register_sandbox_backends` hook.

Paths given to `write_file`/`read_file` are relative to the sandbox's work directory, which is also
the working directory of every `exec`.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace


class ExecStatus(enum.Enum):
    OK = "ok"  # the program ran to its end (whatever its exit code)
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    OUTPUT_LIMIT = "output_limit"
    KILLED = "killed"  # killed by a signal not explained by the cases above
    SANDBOX_ERROR = "sandbox_error"  # the sandbox itself failed: an infrastructure failure


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: float = 10.0
    memory_mb: int = 512
    pids: int = 64
    output_bytes: int = 1 << 20  # per stream
    file_size_mb: int = 64
    workdir_mb: int = 64
    cpus: float = 1.0

    def with_overrides(self, **changes: float) -> Limits:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Profile:
    """A named kind of sandbox: which image, which limits, whether it may reach a network."""

    name: str
    image: str
    limits: Limits = field(default_factory=Limits)
    network: bool = False
    backend: str = ""  # empty: the manager's default choice


@dataclass
class ExecResult:
    status: ExecStatus
    exit_code: int | None
    stdout: str
    stderr: str
    wall_seconds: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Ran to completion and exited 0."""
        return self.status is ExecStatus.OK and self.exit_code == 0

    @property
    def infra_failure(self) -> bool:
        return self.status is ExecStatus.SANDBOX_ERROR


class SandboxError(RuntimeError):
    """The sandbox layer failed (daemon down, disk full, lease impossible): an infrastructure failure."""


class Sandbox(abc.ABC):
    """One leased sandbox. Never shared between episodes."""

    profile: Profile

    @abc.abstractmethod
    async def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None: ...

    @abc.abstractmethod
    async def read_file(self, path: str) -> bytes: ...

    @abc.abstractmethod
    async def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str = b"",
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        limits: Limits | None = None,
    ) -> ExecResult:
        """Run argv in the work directory. Never raises for the program's own failures."""

    @abc.abstractmethod
    async def release(self) -> None:
        """Give the sandbox back. Releasing twice is harmless."""

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class SandboxBackend(abc.ABC):
    name: str

    @abc.abstractmethod
    async def lease(self, profile: Profile, labels: Mapping[str, str]) -> Sandbox: ...

    async def start(self) -> None:  # noqa: B027 - optional: warm pools, reaping leftovers
        """Prepare the backend when the server starts."""

    async def shutdown(self) -> None:  # noqa: B027 - optional
        """Release everything the backend holds."""

    def available(self) -> tuple[bool, str]:
        """Whether this backend can run on this machine, and why not."""
        return True, ""
