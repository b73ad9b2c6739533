"""The sandbox API through the manager, against both built-in backends (docker skips without an engine)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from palaestra.sandbox.api import ExecStatus, Limits, SandboxError
from palaestra.sandbox.manager import SandboxManager, parse_profiles
from palaestra.sandbox.testing import docker_or_skip, wait_for_no_leftovers

BACKENDS = ["local", pytest.param("docker", marks=pytest.mark.docker)]


@pytest.fixture(params=BACKENDS)
async def manager(request: pytest.FixtureRequest) -> AsyncIterator[SandboxManager]:
    if request.param == "docker":
        docker_or_skip()
    manager = SandboxManager.for_tests(backend=request.param, pool_size=1)
    await manager.start()
    yield manager
    await manager.shutdown()


async def test_files_exec_stdin_and_release_twice(manager: SandboxManager) -> None:
    sandbox = await manager.lease("python", "episode-api")
    await sandbox.write_file("pkg/main.py", "import sys\nprint(sys.stdin.read()[::-1])\n")
    await sandbox.write_file("data.bin", b"\x00\x01\xff")
    assert await sandbox.read_file("data.bin") == b"\x00\x01\xff"
    result = await sandbox.exec(["python3", "pkg/main.py"], stdin="abc")
    assert result.ok and result.stdout == "cba\n" and result.status is ExecStatus.OK
    assert not result.stdout_truncated and result.wall_seconds > 0
    failing = await sandbox.exec(["python3", "-c", "import sys; print('oops', file=sys.stderr); sys.exit(3)"])
    assert failing.status is ExecStatus.OK and failing.exit_code == 3 and failing.stderr == "oops\n"
    missing = await sandbox.exec(["no-such-program"])
    assert missing.exit_code == 127 and "no-such-program" in missing.stderr
    env = await sandbox.exec(["sh", "-c", "echo $GREETING; pwd"], env={"GREETING": "hello"})
    assert env.stdout.split() == ["hello", "/workspace"]
    await sandbox.release()
    await sandbox.release()
    with pytest.raises(SandboxError):
        await sandbox.write_file("x", "y")
    assert (await sandbox.exec(["true"])).status is ExecStatus.SANDBOX_ERROR


async def test_paths_cannot_escape_and_missing_files_raise(manager: SandboxManager) -> None:
    async with await manager.lease("python", "episode-paths") as sandbox:
        with pytest.raises(ValueError):
            await sandbox.write_file("../escape.txt", "x")
        with pytest.raises(ValueError):
            await sandbox.write_file("/etc/passwd", "x")
        with pytest.raises(FileNotFoundError):
            await sandbox.read_file("absent.txt")


async def test_statuses(manager: SandboxManager) -> None:
    async with await manager.lease("python", "episode-statuses", memory_mb=256) as sandbox:
        timeout = await sandbox.exec(["sleep", "30"], timeout=0.5)
        assert timeout.status is ExecStatus.TIMEOUT and timeout.exit_code is None
        output = await sandbox.exec(
            ["python3", "-c", "print('x' * 5000)"], limits=Limits(output_bytes=1000, wall_seconds=5)
        )
        assert output.status is ExecStatus.OUTPUT_LIMIT and output.stdout_truncated
        assert len(output.stdout) == 1000
        oom = await sandbox.exec(["python3", "-c", "b = bytearray(2 << 30)"])
        assert oom.status is ExecStatus.OUT_OF_MEMORY
        killed = await sandbox.exec(["sh", "-c", "kill -TERM $$"])
        assert killed.status is ExecStatus.KILLED and killed.exit_code == -15
        cpu = await sandbox.exec(
            ["python3", "-c", "while True: pass"], limits=Limits(cpu_seconds=1, wall_seconds=10)
        )
        assert cpu.status is ExecStatus.TIMEOUT and "CPU" in cpu.detail


async def test_concurrent_execs_in_separate_sandboxes(manager: SandboxManager) -> None:
    sandboxes = await asyncio.gather(*(manager.lease("python", f"episode-{i}") for i in range(4)))
    try:
        results = await asyncio.gather(
            *(sb.exec(["python3", "-c", f"print({i} * 2)"]) for i, sb in enumerate(sandboxes))
        )
        assert [r.stdout.strip() for r in results] == ["0", "2", "4", "6"]
        await sandboxes[0].write_file("mine.txt", "only here")
        other = await sandboxes[1].exec(["ls"])
        assert "mine.txt" not in other.stdout
    finally:
        await asyncio.gather(*(sb.release() for sb in sandboxes))
    backends = dict(manager.backends)
    await manager.shutdown()
    counts = await wait_for_no_leftovers(backends)
    assert not any(counts.values()), counts


async def test_cpp_profile_compiles_and_runs(manager: SandboxManager) -> None:
    async with await manager.lease("cpp", "episode-cpp") as sandbox:
        await sandbox.write_file("main.cpp", '#include <cstdio>\nint main(){std::puts("built");}\n')
        build = await sandbox.exec(["g++", "-O0", "-o", "main", "main.cpp"], timeout=60)
        assert build.ok, build.stderr
        run = await sandbox.exec(["./main"])
        assert run.ok and run.stdout == "built\n"


async def test_unknown_profile_and_describe(manager: SandboxManager) -> None:
    with pytest.raises(SandboxError, match="unknown sandbox profile"):
        await manager.lease("cobol", "episode-x")
    assert set(manager.describe()) == {"python", "cpp"}


def test_profiles_from_config() -> None:
    profiles = parse_profiles(
        {
            "profiles": {
                "python": {"limits": {"memory_mb": 128}},
                "node": {"image": "node:20", "network": True},
            }
        }
    )
    assert profiles["python"].limits.memory_mb == 128 and profiles["python"].limits.pids == 64
    assert profiles["node"].image == "node:20" and profiles["node"].network
    with pytest.raises(ValueError):
        parse_profiles({"profiles": {"python": {"limits": {"ram": 1}}}})


async def test_auto_refuses_weaker_isolation_without_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    async with SandboxManager.create_default({"pool_size": 0}) as manager:
        assert manager.describe()["python"].startswith("unavailable: docker is not usable")
        assert "allow_weaker_isolation" in manager.isolation("python")
        with pytest.raises(SandboxError, match="allow_weaker_isolation"):
            await manager.lease("python", "episode-auto")


async def test_auto_falls_back_to_local_only_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    manager = SandboxManager.create_default({"pool_size": 0, "allow_weaker_isolation": True})
    async with manager:
        assert manager.describe() == {"python": "local", "cpp": "local"}
        assert "bubblewrap" in manager.isolation("python") and "weaker" in manager.isolation("python")
        async with await manager.lease("python", "episode-auto") as sandbox:
            assert (await sandbox.exec(["echo", "hi"])).stdout == "hi\n"


async def test_local_without_bubblewrap_refuses_unshare_unless_allowed() -> None:
    from palaestra.sandbox.local import LocalBackend

    strict = LocalBackend({})
    strict.bwrap = None  # as on a host without bubblewrap
    ok, why = strict.available()
    assert not ok and "allow_weaker_isolation" in why
    lenient = LocalBackend({"allow_weaker_isolation": True})
    lenient.bwrap = None
    assert lenient.available() == (True, "") and "unshare" in lenient.describe()
    manager = SandboxManager({"local": lambda config: strict}, {"backend": "local", "pool_size": 0})
    async with manager:
        with pytest.raises(SandboxError, match="bubblewrap"):
            await manager.lease("python", "episode-no-bwrap")
