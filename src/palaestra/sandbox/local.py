"""The local process backend: the runner inside a bubblewrap (or unshare) namespace on the host.

Isolation, weaker than Docker's (no cgroup memory or CPU limit; the host kernel and /usr are shared):

* user, PID, network, mount, IPC and UTS namespaces: no network at all (not even the host's loopback), and
  the sandbox sees only /usr (read-only), a few /etc files, its own /proc and /dev, and two size-limited
  tmpfs mounts: /workspace (the work dir) and /tmp. Host files elsewhere (/root, /home, /tmp...) do not exist.
* no capabilities (dropped after mounting the tmpfs work dir) and no-new-privileges;
* when the server runs as root, each sandbox runs as its own unprivileged host uid, so RLIMIT_NPROC (pids)
  contains fork bombs per sandbox; without root it cannot be applied per sandbox and is not set;
* per job, the runner sets RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE, and kills the job's process group
  and everything else in the namespace afterwards.

Without bubblewrap, `unshare` gives user, PID, network and mount namespaces but the whole host file system
stays visible read-only: weaker still, so it is used only with ``allow_weaker_isolation = true`` (else the
backend is unavailable, saying why). The manager logs which backend and mechanism each profile uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import resource
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from palaestra.sandbox.api import Profile, SandboxError
from palaestra.sandbox.pool import RunnerBackend
from palaestra.sandbox.runner_client import (
    CONTROL_TIMEOUT,
    RUNNER_SOURCE,
    PlainSource,
    RunnerChannel,
    RunnerHandle,
)

log = logging.getLogger("palaestra.sandbox.local")

WORKDIR = "/workspace"
ETC_FILES = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
)
FIRST_SANDBOX_UID = 200_000
UID_SLOTS = 60_000
PYTHON = "/usr/bin/python3"
UID_LOCK_DIR = Path("/run/palaestra-sandbox-uids") if os.geteuid() == 0 else Path("/tmp/palaestra-uids")
GRACEFUL_EXIT_SECONDS = 1.0


def _uid_block() -> itertools.cycle[int]:
    """Candidate per-sandbox host uids, offset by our pid so two servers on one host rarely meet."""
    start = (os.getpid() * 97) % UID_SLOTS
    return itertools.cycle([FIRST_SANDBOX_UID + (start + i) % UID_SLOTS for i in range(UID_SLOTS)])


def claim_uid(candidates: itertools.cycle[int]) -> tuple[int, int]:
    """A uid no other sandbox on this host holds: a flock'd file per uid, freed when closed or we die."""
    UID_LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    for _ in range(UID_SLOTS):
        uid = next(candidates)
        fd = os.open(UID_LOCK_DIR / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return uid, fd
    raise SandboxError("no free sandbox uid")


class LocalHandle(RunnerHandle):
    def __init__(
        self, process: asyncio.subprocess.Process, channel: RunnerChannel, ident: str, uid_lock: int
    ) -> None:
        self.process = process
        self.uid_lock = uid_lock  # held while the sandbox lives
        self.channel = channel
        self.ident = ident
        self.stderr_reader: asyncio.Task[None] | None = None

    async def destroy(self) -> None:
        # Closing stdin ends the runner and so the namespace, and bwrap reaps its init; a SIGKILL to bwrap
        # would leave that init to the host's pid 1 to reap. SIGKILL only when the runner does not go.
        self.channel.close()
        try:
            await asyncio.wait_for(self.process.wait(), GRACEFUL_EXIT_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        if self.uid_lock >= 0:
            os.close(self.uid_lock)
            self.uid_lock = -1


class LocalBackend(RunnerBackend):
    name = "local"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.bwrap = shutil.which("bwrap")
        self.unshare = shutil.which("unshare")
        self.python = str(self.config.get("local_python", PYTHON))
        self.per_sandbox_uid = os.geteuid() == 0
        self.allow_weaker_isolation = bool(self.config.get("allow_weaker_isolation", False))
        self._uids = _uid_block()
        self.used_uids: set[int] = set()  # for leak checks
        self._counter = itertools.count(1)

    def available(self) -> tuple[bool, str]:
        if not Path(self.python).exists():
            return False, f"{self.python} not found"
        if self.bwrap is None and not self.allow_weaker_isolation:
            return False, (
                "bubblewrap (bwrap) is not installed; `unshare` would leave the host file system visible, "
                "which needs [sandbox] allow_weaker_isolation = true"
            )
        if self.bwrap is None and self.unshare is None:
            return False, "neither bwrap nor unshare is installed"
        return True, ""

    @property
    def mechanism(self) -> str:
        return "bubblewrap" if self.bwrap else "unshare"

    def describe(self) -> str:
        uid = "per-sandbox uid" if self.per_sandbox_uid else "shared uid (no per-sandbox process limit)"
        return f"local ({self.mechanism}, {uid}; weaker isolation than docker)"

    async def start_runner(self, profile: Profile, labels: Mapping[str, str]) -> RunnerHandle:
        argv = self._bwrap_argv(profile) if self.bwrap else self._unshare_argv(profile)
        uid, uid_lock = claim_uid(self._uids) if self.per_sandbox_uid else (None, -1)
        if uid is not None:
            self.used_uids.add(uid)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                user=uid,
                group=uid,
                extra_groups=[] if uid is not None else None,
                preexec_fn=_process_limit(profile.limits.pids) if uid is not None else None,
                env=self._runner_env(),
            )
        except OSError:
            if uid_lock >= 0:
                os.close(uid_lock)
            raise
        assert process.stdin is not None and process.stdout is not None
        channel = RunnerChannel(PlainSource(process.stdout), process.stdin)
        handle = LocalHandle(process, channel, f"local-{process.pid}-{next(self._counter)}", uid_lock)
        try:
            reply = await channel.call({"op": "ping"}, CONTROL_TIMEOUT)
        except Exception as exc:
            stderr = await _read_stderr(process)
            await handle.destroy()
            raise SandboxError(f"local sandbox did not start: {exc}; {stderr}") from exc
        if not reply.get("ok"):
            await handle.destroy()
            raise SandboxError(f"local sandbox runner refused ping: {reply}")
        handle.stderr_reader = asyncio.create_task(_discard_stream(process.stderr))
        return handle

    def _runner_env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "PALAESTRA_RUNNER_SOURCE": RUNNER_SOURCE,
            "PALAESTRA_WORKDIR": WORKDIR,
            "PALAESTRA_SWEEP": "1",  # the runner owns its PID namespace
            "PALAESTRA_RLIMIT_AS": "1",  # no memory cgroup here: the address-space rlimit is the limit
        }

    def _bootstrap_script(self, profile: Profile) -> str:
        """Mount the size-limited tmpfs dirs, then drop every capability and start the runner."""
        size = f"size={profile.limits.workdir_mb}m,nr_inodes={profile.limits.workdir_inodes}"
        return (
            f"mount -t tmpfs -o {size},mode=0755 tmpfs {WORKDIR} && "
            f"mount -t tmpfs -o {size},mode=1777 tmpfs /tmp && "
            "exec setpriv --no-new-privs --inh-caps=-all --bounding-set=-all -- "
            f'{self.python} -I -S -c "$PALAESTRA_RUNNER_SOURCE"'
        )

    def _bwrap_argv(self, profile: Profile) -> list[str]:
        assert self.bwrap is not None
        # --as-pid-1: the runner is the namespace's init (no bubblewrap reaper in between), so, as in Docker,
        # the kernel delivers no signal from inside the sandbox that it does not handle: a job can neither
        # kill nor stop it (and `kill -1` spares it).
        argv = [self.bwrap, "--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session"]
        if profile.network:
            argv.append("--share-net")
        argv += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/lib", "/lib64", "/lib32", "/sbin"):
            path = Path(top)
            if path.is_symlink():
                argv += ["--symlink", os.readlink(path), top]
            elif path.is_dir():
                argv += ["--ro-bind", top, top]
        for etc in ETC_FILES:
            if os.path.exists(etc):
                argv += ["--ro-bind", etc, etc]
        if profile.network and os.path.exists("/etc/resolv.conf"):
            argv += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
        argv += ["--proc", "/proc", "--dev", "/dev", "--dir", WORKDIR, "--dir", "/tmp"]
        argv += ["--uid", "0", "--gid", "0", "--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETPCAP"]
        argv += ["--remount-ro", "/", "--chdir", "/", "--", "/bin/sh", "-c", self._bootstrap_script(profile)]
        return argv

    def _unshare_argv(self, profile: Profile) -> list[str]:
        assert self.unshare is not None
        network = [] if profile.network else ["--net"]
        # A private mount namespace lets the bootstrap mount the work dir; the rest of / stays visible.
        return [
            self.unshare,
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--mount-proc",
            "--ipc",
            "--uts",
            *network,
            "/bin/sh",
            "-c",
            f"mkdir -p {WORKDIR} 2>/dev/null; " + self._bootstrap_script(profile),
        ]


def _process_limit(pids: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NPROC, (pids, pids))

    return apply


async def _read_stderr(process: asyncio.subprocess.Process) -> str:
    if process.stderr is None:
        return ""
    try:
        data = await asyncio.wait_for(process.stderr.read(4096), 1.0)
    except (TimeoutError, OSError):
        return ""
    return data.decode("utf-8", "replace").strip()


async def _discard_stream(stream: asyncio.StreamReader | None) -> None:
    """Keep the runner's stderr pipe from filling up (the runner only writes there when it crashes)."""
    if stream is None:
        return
    while await stream.read(65536):
        pass
