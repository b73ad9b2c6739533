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

HEALTH_CHECK_SECONDS = 30.0


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
    workdir_inodes: int = 16384  # files and directories in /workspace (and in /tmp): bounds kernel memory
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
    cpu_seconds: float = 0.0  # CPU time of everything in the sandbox during the job
    cpu_wait_seconds: float = 0.0  # time the job's process waited for a CPU (the host's load, not the job)
    overloaded: bool = False  # a TIMEOUT because the host kept the job off the CPU (see docs/sandboxes.md)

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

    async def check_health(self) -> str:
        """ "" when the sandbox works, else why not: a health check a finished job cannot influence.

        Call it between jobs: every process of the last job is gone by then, so what answers is the
        sandbox layer itself. The default runs a trivial program; it needs `python3` in the sandbox.
        """
        result = await self.exec(["python3", "-I", "-S", "-c", "print('ok')"], timeout=HEALTH_CHECK_SECONDS)
        if result.status is ExecStatus.OK and result.exit_code == 0 and result.stdout == "ok\n":
            return ""
        return f"a trivial program ended with {result.status.value} (exit {result.exit_code}) {result.detail}"

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
