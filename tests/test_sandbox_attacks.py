"""The attack suite: hostile programs against both backends (docker skips without an engine, fails under CI).

Each attack must be contained, reported with the right status, leave nothing running in the sandbox, and
the sandbox (and the layer) must serve the next request at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from palaestra.sandbox.api import ExecResult, ExecStatus, Limits, Sandbox
from palaestra.sandbox.manager import SandboxManager
from palaestra.sandbox.runner_client import PlainSource, RunnerChannel, RunnerCorrupt
from palaestra.sandbox.testing import docker_or_skip, wait_for_no_leftovers

BACKENDS = ["local", pytest.param("docker", marks=pytest.mark.docker)]
SMALL = {
    "memory_mb": 128,
    "pids": 32,
    "workdir_mb": 16,
    "workdir_inodes": 4096,
    "file_size_mb": 32,
    "wall_seconds": 1.0,
}
# Prints the processes other than init, the runner, the runner's fork server (its one other child, named
# "pal-zygote" once started) and the probe itself.
LIST_STRAY_PROCESSES = """
import os

def stat(pid):
    text = open(f"/proc/{pid}/stat").read()
    return text[text.index("(") + 1 : text.rindex(")")], int(text.rsplit(")", 1)[1].split()[1])

parent_name, grandparent = stat(os.getppid())
runner = grandparent if parent_name == "pal-zygote" else os.getppid()
stray, servers = [], []
for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) in (1, os.getpid(), os.getppid(), runner):
        continue
    try:
        name, ppid = stat(entry)
    except OSError:
        continue
    (servers if ppid == runner else stray).append(f"{entry}:{name}")
print(stray + servers[1:])
"""


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    if request.param == "docker":
        docker_or_skip()
    return str(request.param)


@pytest.fixture
async def manager(backend_name: str) -> AsyncIterator[SandboxManager]:
    config = {"profiles": {"python": {"limits": SMALL}}, "max_concurrent_creations": 8}
    manager = SandboxManager.for_tests(backend=backend_name, pool_size=0, **config)
    await manager.start()
    yield manager
    backends = dict(manager.backends)
    await manager.shutdown()
    counts = await wait_for_no_leftovers(backends)
    assert not any(counts.values()), f"left behind: {counts}"


@pytest.fixture
async def sandbox(manager: SandboxManager) -> AsyncIterator[Sandbox]:
    sandbox = await manager.lease("python", "episode-attack")
    yield sandbox
    await sandbox.release()


async def python(sandbox: Sandbox, code: str, **kwargs: object) -> ExecResult:
    return await sandbox.exec(["python3", "-c", textwrap.dedent(code)], **kwargs)  # type: ignore[arg-type]


async def assert_clean_and_serving(sandbox: Sandbox) -> None:
    """Nothing but init, the runner, its fork server and this probe runs; the sandbox answers at once."""
    probe = await python(sandbox, LIST_STRAY_PROCESSES)
    assert probe.ok, probe
    assert probe.stdout.strip() == "[]", f"processes left in the sandbox: {probe.stdout}"


async def test_fork_bomb(sandbox: Sandbox) -> None:
    result = await python(
        sandbox,
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
    )
    assert result.status is ExecStatus.TIMEOUT
    await assert_clean_and_serving(sandbox)


async def test_memory_bomb(sandbox: Sandbox) -> None:
    result = await python(sandbox, "x = []\nwhile True: x.append(bytearray(1 << 20))", timeout=10)
    assert result.status is ExecStatus.OUT_OF_MEMORY, result
    await assert_clean_and_serving(sandbox)


async def test_cpu_spin_wall_and_cpu_limits(sandbox: Sandbox) -> None:
    spin = await python(sandbox, "while True: pass")
    assert spin.status is ExecStatus.TIMEOUT
    cpu_limited = await python(sandbox, "while True: pass", limits=Limits(cpu_seconds=1, wall_seconds=10))
    assert cpu_limited.status is ExecStatus.TIMEOUT and "CPU" in cpu_limited.detail
    await assert_clean_and_serving(sandbox)


async def test_sleep_forever(sandbox: Sandbox) -> None:
    result = await sandbox.exec(["sleep", "infinity"])
    assert result.status is ExecStatus.TIMEOUT and result.wall_seconds < 5
    await assert_clean_and_serving(sandbox)


async def test_gigabyte_of_stdout(sandbox: Sandbox) -> None:
    result = await python(
        sandbox,
        "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(1024): sys.stdout.write(block)",
        timeout=20,
    )
    assert result.status is ExecStatus.OUTPUT_LIMIT and result.stdout_truncated
    assert len(result.stdout) == Limits().output_bytes
    await assert_clean_and_serving(sandbox)


async def test_disk_fill_is_bounded(sandbox: Sandbox) -> None:
    result = await python(
        sandbox,
        """
        with open('fill', 'wb') as f:
            while True:
                f.write(b'0' * (1 << 20))
        """,
        timeout=10,
    )
    assert not result.ok and result.status in (ExecStatus.OK, ExecStatus.OUTPUT_LIMIT)
    assert "No space left" in result.stderr or "too large" in result.stderr or result.exit_code is None
    size = await python(sandbox, "import os; print(os.path.getsize('fill'))")
    assert int(size.stdout) <= SMALL["workdir_mb"] << 20
    await sandbox.exec(["rm", "fill"])
    await sandbox.write_file("after.txt", "still writable")
    await assert_clean_and_serving(sandbox)


async def test_writes_outside_the_work_dir(sandbox: Sandbox) -> None:
    marker = f"palaestra-escape-{os.getpid()}"
    targets = [f"/usr/{marker}", f"/etc/{marker}", f"/{marker}", f"/proc/{marker}"]
    result = await sandbox.exec(["sh", "-c", "; ".join(f"echo pwned > {t}" for t in targets) + "; exit 1"])
    assert result.exit_code == 1
    for target in targets:
        assert not Path(target).exists()
        check = await sandbox.exec(["test", "-e", target])
        assert check.exit_code == 1
    await assert_clean_and_serving(sandbox)


async def test_network_egress_to_host_loopback(sandbox: Sandbox) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        result = await python(
            sandbox,
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"
            "print('connected')",
        )
        assert "connected" not in result.stdout and not result.ok
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    await assert_clean_and_serving(sandbox)


async def test_reading_host_files(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    secret.chmod(0o644)
    result = await sandbox.exec(["sh", "-c", f"cat {secret}; cat /root/.bash_history; cat /etc/shadow"])
    assert "TOP-SECRET-42" not in result.stdout and result.exit_code != 0
    await assert_clean_and_serving(sandbox)


async def test_zombies_and_background_processes(sandbox: Sandbox) -> None:
    result = await sandbox.exec(
        ["sh", "-c", "sleep 1000 & (setsid sleep 1000 &) ; nohup sleep 1000 >/dev/null 2>&1 & echo started"]
    )
    assert result.ok and result.stdout == "started\n"
    zombie = await python(sandbox, "import os\nif os.fork() == 0: os._exit(0)\nprint('left a zombie')")
    assert zombie.ok
    await assert_clean_and_serving(sandbox)


async def test_killing_the_runner(sandbox: Sandbox) -> None:
    await sandbox.write_file("work.txt", "x")
    # On both backends the runner is its PID namespace's init (Docker: the container's main process; local:
    # `bwrap --as-pid-1`): the kernel drops every signal from inside the namespace to pid 1 that it does not
    # handle, so a job can neither kill nor stop it and the work dir survives.
    for attack in (
        "kill -9 $PPID",
        "kill -9 1",
        "kill -9 -1",
        "kill -STOP $PPID",
        "kill -STOP 1",
        "kill -INT $PPID",
    ):
        survived = await sandbox.exec(["sh", "-c", f"{attack}; echo alive"])
        assert survived.ok and survived.stdout == "alive\n", (attack, survived)
    assert await sandbox.read_file("work.txt") == b"x"
    await assert_clean_and_serving(sandbox)


async def test_a_stopped_job_ends_at_once(sandbox: Sandbox) -> None:
    # A job that stops itself (or its whole namespace) would otherwise hold the sandbox until its wall limit.
    for attack in ("kill -STOP $$", "kill -STOP -1; kill -STOP $$"):
        stopped = await sandbox.exec(["sh", "-c", attack], timeout=60)
        assert stopped.status is ExecStatus.KILLED and "stopped" in stopped.detail, (attack, stopped)
        assert stopped.wall_seconds < 30, stopped  # far below the limit: the runner noticed the stop
    await assert_clean_and_serving(sandbox)


async def test_inode_flood_is_bounded(sandbox: Sandbox) -> None:
    # Empty files cost kernel memory, not tmpfs bytes: the work dir and /tmp have an inode limit.
    result = await python(
        sandbox,
        """
        import os
        for directory in ("/workspace", "/tmp"):
            count = 0
            try:
                while True:
                    open(os.path.join(directory, f"f{count}"), "w").close()
                    count += 1
            except OSError as exc:
                print(directory, count, exc.errno)
        """,
        timeout=30,
    )
    assert result.ok, result
    for line in result.stdout.splitlines():
        _directory, count, errno_value = line.split()
        assert int(count) <= SMALL["workdir_inodes"] and errno_value == "28", result.stdout
    await sandbox.exec(["sh", "-c", "rm -f /workspace/f* /tmp/f*"])
    await sandbox.write_file("after.txt", "still writable")
    await assert_clean_and_serving(sandbox)


# Writes frames of garbage (and a forged reply) into every fd of every other process it can open, and
# tries to steal bytes from their stdin; prints the pids it reached. It runs both ways: exec'd from `sh`
# (its parent is the runner) and as a `python3 -c` job (its parent is the fork server).
GARBLE_EVERY_REACHABLE_FD = r"""
import json, os, struct, sys

forged = json.dumps({"ok": True, "status": "ok", "exit_code": 0, "stdout": "", "stderr": "", "wall": 0,
                     "stdout_truncated": False, "stderr_truncated": False}).encode()
garbage = struct.pack(">I", len(forged)) + forged + b"\xff\x00garbage" * 64
reached = set()
for entry in os.listdir("/proc"):
    try:
        if not entry.isdigit() or os.getsid(int(entry)) == os.getsid(0):
            continue  # the job's own processes (the `sh` that started it shares our stdout)
    except OSError:
        continue
    try:
        fds = os.listdir(f"/proc/{entry}/fd")
    except OSError:
        continue
    for fd in fds:
        path = f"/proc/{entry}/fd/{fd}"
        for flags in (os.O_WRONLY | os.O_NONBLOCK, os.O_RDONLY | os.O_NONBLOCK):
            try:
                handle = os.open(path, flags)
            except OSError:
                continue
            try:
                os.write(handle, garbage) if flags & os.O_WRONLY else os.read(handle, 65536)
                reached.add(int(entry))
            except OSError:
                pass
            finally:
                os.close(handle)
print(json.dumps({"reached": sorted(reached), "parent": os.getppid()}))
"""


@pytest.mark.parametrize("launch", ["exec", "fork"])
async def test_writing_into_init_and_runner_fds(sandbox: Sandbox, launch: str) -> None:
    """A job cannot reach the runner's channel (held by pid 1 in Docker, by the runner everywhere): the
    sandbox keeps answering, the job's own result comes back, and nothing is reset."""
    await sandbox.write_file("work.txt", "kept")
    result = await launch_python_file(sandbox, "garble.py", GARBLE_EVERY_REACHABLE_FD, launch)
    assert result.status is ExecStatus.OK and result.exit_code == 0, result
    report = json.loads(result.stdout)
    runner = (await sandbox.exec(["sh", "-c", "echo $PPID"])).stdout.strip()
    assert 1 not in report["reached"] and int(runner) not in report["reached"], report
    assert await sandbox.read_file("work.txt") == b"kept"  # the same sandbox: it was not replaced
    await assert_clean_and_serving(sandbox)


ORPHAN_FACTORY = """
import os, time

def fork():
    while True:
        try:
            return os.fork()
        except BlockingIOError:  # at the pid limit: wait for init to reap
            time.sleep(0.01)

for i in range(100):
    if fork() == 0:
        if fork() == 0:
            os._exit(0)  # the grandchild, orphaned as soon as its parent exits
        os._exit(0)
    os.wait()
print("forked", i + 1)
"""


async def launch_python_file(sandbox: Sandbox, name: str, source: str, launch: str) -> ExecResult:
    """Run a Python file exec'd by `sh` (the runner is its grandparent) or through the fork server."""
    await sandbox.write_file(name, source)
    if launch == "exec":
        return await sandbox.exec(["sh", "-c", f"python3 {name}"], timeout=20)
    for _ in range(100):  # the fork server starts in the background after the sandbox
        probe = await python(sandbox, "import os; print(open(f'/proc/{os.getppid()}/comm').read())")
        if probe.stdout.strip() == "pal-zygote":
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the fork server did not start")
    return await sandbox.exec(["python3", name], timeout=20)


@pytest.mark.parametrize("launch", ["exec", "fork"])
async def test_orphans_are_reaped_while_the_job_runs(sandbox: Sandbox, launch: str) -> None:
    """Each orphan is re-parented to the sandbox's init (in Docker: the runner), which must reap it at once,
    or 100 of them would exhaust the pid limit (32) while the job still runs."""
    result = await launch_python_file(sandbox, "orphans.py", ORPHAN_FACTORY, launch)
    assert result.ok and result.stdout == "forked 100\n", result
    await assert_clean_and_serving(sandbox)


@pytest.mark.slow
async def test_200_concurrent_leases_leave_nothing(backend_name: str) -> None:
    manager = SandboxManager.for_tests(backend=backend_name, pool_size=2, max_concurrent_creations=8)
    await manager.start()

    async def episode(i: int) -> str:
        sandbox = await manager.lease("python", f"episode-{i}")
        try:
            return (await sandbox.exec(["echo", str(i)])).stdout
        finally:
            await sandbox.release()

    outputs = await asyncio.gather(*(episode(i) for i in range(200)))
    assert outputs == [f"{i}\n" for i in range(200)]
    backends = dict(manager.backends)
    await manager.shutdown()
    counts = await wait_for_no_leftovers(backends, bound_seconds=30)
    assert not any(counts.values()), counts


CRASHING_SERVER = """
import asyncio, sys
from palaestra.sandbox.manager import SandboxManager

async def main():
    manager = SandboxManager.for_tests(backend=sys.argv[1], pool_size=1)
    await manager.start()
    held = [await manager.lease("python", f"crash-{i}") for i in range(3)]
    await held[0].exec(["sh", "-c", "sleep 1000 &"])
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_sigkilled_server_leftovers_are_reaped(backend_name: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SERVER, backend_name], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 120)
        assert line.strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    manager = SandboxManager.for_tests(backend=backend_name, pool_size=0)
    await manager.start()
    try:
        if backend_name == "docker":
            docker_backend = manager.backends["docker"]
            # The child may have been killed while the engine created a pool container for it: the engine
            # finishes that creation after our start-up reap, and the periodic reap takes it. Reap as that
            # does, a bounded number of times.
            for _ in range(20):
                # Sparse: no inspect per listed container, which races with the reaper's removals.
                remaining = docker_backend.client.containers.list(
                    all=True, filters={"label": f"org.palaestra.pid={child.pid}"}, sparse=True
                )
                if not remaining:
                    break
                await asyncio.sleep(0.5)
                await docker_backend.reap()
            assert remaining == []
        else:
            # The namespaces die with their parent (bwrap --die-with-parent): nothing of the child's remains.
            await asyncio.sleep(0.5)
            leftover = subprocess.run(
                ["pgrep", "-f", "PALAESTRA_RUNNER_SOURCE"], capture_output=True, text=True
            )
            own = {int(p) for p in leftover.stdout.split()}
            assert not any(_parent_chain_contains(pid, child.pid) for pid in own)
    finally:
        await manager.shutdown()


def _parent_chain_contains(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


class _NullWriter:
    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x00\x00\x07garbage", b"\xff\xff\xff\xffxx", b"\x00\x00\x00\x02[]", b"\x00\x00\x00\x02\xff\xfe"],
)
async def test_a_garbled_channel_is_reported_as_corrupt(garbage: bytes) -> None:
    """Defence in depth on the host: whatever reaches the channel that is not a reply is `RunnerCorrupt`
    (a `RunnerGone`, so an exec reports the job's KILLED and replaces the sandbox), never a stray error."""
    reader = asyncio.StreamReader()
    reader.feed_data(garbage)
    channel = RunnerChannel(PlainSource(reader), cast(asyncio.StreamWriter, _NullWriter()))
    with pytest.raises(RunnerCorrupt):
        await channel.call({"op": "ping"}, timeout=5)


HOLDING_SERVER = """
import asyncio, sys
from palaestra.sandbox.manager import SandboxManager

async def main():
    manager = SandboxManager.for_tests(backend="docker", pool_size=0)
    await manager.start()
    held = [await manager.lease("python", f"held-{i}") for i in range(3)]
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.docker
async def test_containers_go_by_themselves_when_their_server_dies() -> None:
    docker_or_skip()
    import docker

    child = subprocess.Popen([sys.executable, "-c", HOLDING_SERVER], stdout=subprocess.PIPE, text=True)
    client = docker.from_env()
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 120)
        assert line.strip() == "ready"
        mine = {"label": f"org.palaestra.pid={child.pid}"}
        assert len(client.containers.list(filters=mine, sparse=True)) == 3
        child.send_signal(signal.SIGKILL)
        child.wait()
        # No reaper runs here: the engine closes each runner's stdin with the dead server's attach stream,
        # the runner exits and the container removes itself.
        for _ in range(200):
            # Sparse: no inspect per listed container, which fails when one goes meanwhile.
            remaining = client.containers.list(all=True, filters=mine, sparse=True)
            if not remaining:
                break
            await asyncio.sleep(0.1)
        assert remaining == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        client.close()


@pytest.mark.docker
async def test_dead_pool_containers_are_replaced() -> None:
    """After an engine outage (here: the pool's containers killed behind the manager's back), a lease gets
    a working sandbox and the pool refills with live ones."""
    docker_or_skip()
    async with SandboxManager.for_tests(backend="docker", pool_size=2) as manager:
        backend = cast(Any, manager.backends["docker"])
        assert backend.pools == {}  # pools start with a profile's first lease, not with the server
        async with await manager.lease("python", "first") as sandbox:
            assert (await sandbox.exec(["echo", "hi"])).stdout == "hi\n"
        pool = backend.pools["python"][1]
        for _ in range(300):
            if len(pool.ready) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(pool.ready) == 2
        for handle in list(pool.ready):
            await asyncio.to_thread(handle.container.kill)
        async with await manager.lease("python", "after-outage") as sandbox:
            assert (await sandbox.exec(["echo", "alive"])).stdout == "alive\n"
        for _ in range(300):
            if len(pool.ready) == 2 and all([await h.ping() for h in list(pool.ready)]):
                break
            await asyncio.sleep(0.1)
        assert len(pool.ready) == 2
