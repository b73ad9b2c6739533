"""The attack suite: hostile programs against both backends (docker skips without an engine, fails under CI).

Each attack must be contained, reported with the right status, leave nothing running in the sandbox, and
the sandbox (and the layer) must serve the next request at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from palaestra.sandbox.api import ExecResult, ExecStatus, Limits, Sandbox
from palaestra.sandbox.manager import SandboxManager
from palaestra.sandbox.testing import docker_or_skip, wait_for_no_leftovers

BACKENDS = ["local", pytest.param("docker", marks=pytest.mark.docker)]
SMALL = {"memory_mb": 128, "pids": 32, "workdir_mb": 16, "file_size_mb": 32, "wall_seconds": 1.0}
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
    result = await sandbox.exec(["sh", "-c", "kill -9 $PPID; sleep 5"])
    assert result.status is ExecStatus.KILLED and "runner" in result.detail
    everything = await sandbox.exec(["sh", "-c", "kill -9 -1; sleep 5"])
    assert everything.status is ExecStatus.KILLED
    stopped = await sandbox.exec(["sh", "-c", "kill -STOP $PPID"], timeout=0.5)
    assert stopped.status is ExecStatus.TIMEOUT and "replaced" in stopped.detail
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
            remaining = docker_backend.client.containers.list(
                all=True, filters={"label": f"org.palaestra.pid={child.pid}"}
            )
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
