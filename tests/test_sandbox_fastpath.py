"""The runner's Python fast path (a fork server, the "zygote") against both backends.

Each program runs twice in the same sandbox: through the fast path and through a real interpreter (an
extra `PYTHON_...` variable, which CPython ignores, makes the runner exec). Both must give the same status,
exit code, stdout, stderr and files. Further tests: jobs share no state, the fork server is out of reach of
ptrace and /proc, and a job that kills or stops it is contained.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import AsyncIterator

import pytest

from palaestra.sandbox.api import ExecResult, ExecStatus, Sandbox
from palaestra.sandbox.manager import SandboxManager
from palaestra.sandbox.testing import docker_or_skip, wait_for_no_leftovers

BACKENDS = ["local", pytest.param("docker", marks=pytest.mark.docker)]
FORCE_EXEC = {"PYTHON_PALAESTRA_TEST_EXEC": "1"}  # read at interpreter start-up: the runner must exec
PARENT_NAME = "import os\nprint(open(f'/proc/{os.getppid()}/comm').read().strip())"
ZYGOTE_NAME = "pal-zygote"

INTROSPECT = """
import os, sys
print(sys.argv, sys.orig_argv, sys.path, sys.executable)
print(sorted((k, type(v).__name__) for k, v in globals().items()))
loader = __loader__ if isinstance(__loader__, type) else type(__loader__)
print(__name__, __file__, loader.__name__, __spec__, __package__, __doc__)
print(sys.flags)
print(repr(sys.stdin.read()), sys.stdin.seekable(), sys.stdout.seekable(), sys.stdout.line_buffering)
print(sys.stdout.encoding, sys.stdin.encoding, sys.getfilesystemencoding())
print(os.getcwd(), sorted(k for k in os.environ if not k.startswith("PYTHON_PALAESTRA")))
import site
print(site.USER_SITE, site.ENABLE_USER_SITE)
raise SystemExit(3)
"""
TRACEBACK = """
def inner():
    return 1 / 0

def outer():
    inner()

outer()
"""
FINALIZATION = """
import atexit, threading, time

class Noisy:
    def __del__(self):
        print("del at teardown", flush=True)

keep = Noisy()
unclosed = open("unclosed.txt", "w")
unclosed.write("written at exit")
atexit.register(lambda: print("atexit ran", flush=True))

def late():
    time.sleep(0.05)
    print("thread finished", flush=True)

threading.Thread(target=late).start()
print("main finished", flush=True)
"""
MODULE = """
import sys
print(__name__, __file__, sys.argv, sys.path[0])
raise ValueError("from a module")
"""
UNIT_TESTS = """
import unittest

class Sums(unittest.TestCase):
    def test_passes(self):
        self.assertEqual(1 + 1, 2)

    def test_fails(self):
        self.assertEqual(sum([1, 2]), 4)

if __name__ == "__main__":
    unittest.main()
"""
# argv, files to write first; every case runs both ways in one sandbox.
FIDELITY_CASES = {
    "script": (["python3", "pkg/main.py", "a", "b c"], {"pkg/main.py": INTROSPECT}),
    "code": (["python3", "-c", INTROSPECT, "x"], {}),
    "traceback": (["python3", "tb.py"], {"tb.py": TRACEBACK}),
    "code-traceback": (["python3", "-c", TRACEBACK], {}),
    "system-exit-message": (["python3", "-c", "raise SystemExit('bye')"], {}),
    "keyboard-interrupt": (["python3", "-c", "raise KeyboardInterrupt"], {}),
    "syntax-error": (["python3", "bad.py"], {"bad.py": "x = (\n"}),
    "missing-script": (["python3", "absent.py"], {}),
    "module": (["python3", "-m", "pkg.mod", "arg"], {"pkg/__init__.py": "", "pkg/mod.py": MODULE}),
    "finalization": (["python3", "fin.py"], {"fin.py": FINALIZATION}),
    "unittest": (["python3", "test_sums.py"], {"test_sums.py": UNIT_TESTS}),
    "shadowed-module": (["python3", "-c", "import json; print(json.__file__)"], {"json.py": "print('mine')"}),
}


@pytest.fixture(params=BACKENDS)
async def manager(request: pytest.FixtureRequest) -> AsyncIterator[SandboxManager]:
    if request.param == "docker":
        docker_or_skip()
    manager = SandboxManager.for_tests(backend=request.param, pool_size=0)
    await manager.start()
    yield manager
    backends = dict(manager.backends)
    await manager.shutdown()
    counts = await wait_for_no_leftovers(backends)
    assert not any(counts.values()), f"left behind: {counts}"


@pytest.fixture
async def sandbox(manager: SandboxManager) -> AsyncIterator[Sandbox]:
    sandbox = await manager.lease("python", "episode-fastpath")
    await wait_for_fork_server(sandbox)
    yield sandbox
    await sandbox.release()


async def parent_name(sandbox: Sandbox, env: dict[str, str] | None = None) -> str:
    result = await sandbox.exec(["python3", "-c", PARENT_NAME], env=env)
    assert result.ok, result
    return result.stdout.strip()


async def wait_for_fork_server(sandbox: Sandbox, bound_seconds: float = 20.0) -> None:
    """Python jobs are exec'd while the fork server starts; wait until it serves them."""
    for _ in range(int(bound_seconds / 0.05)):
        if await parent_name(sandbox) == ZYGOTE_NAME:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the fork server never served a Python job")


def comparable(result: ExecResult) -> tuple[object, ...]:
    timing = re.compile(r"Ran (\d+) tests? in [0-9.]+s")
    stderr = timing.sub(r"Ran \1 tests in Xs", result.stderr)
    return result.status, result.exit_code, result.stdout, stderr, result.stdout_truncated


async def test_the_fast_path_serves_python_and_only_python(sandbox: Sandbox) -> None:
    assert await parent_name(sandbox) == ZYGOTE_NAME
    assert await parent_name(sandbox, env=FORCE_EXEC) != ZYGOTE_NAME
    assert await parent_name(sandbox, env={"PYTHONHASHSEED": "0"}) != ZYGOTE_NAME
    shell = await sandbox.exec(["sh", "-c", "cat /proc/$PPID/comm"])
    assert shell.stdout.strip() != ZYGOTE_NAME
    unbuffered = await sandbox.exec(["python3", "-u", "-c", PARENT_NAME])
    assert unbuffered.stdout.strip() != ZYGOTE_NAME


@pytest.mark.parametrize("case", sorted(FIDELITY_CASES))
async def test_fast_path_behaves_like_a_fresh_interpreter(sandbox: Sandbox, case: str) -> None:
    argv, files = FIDELITY_CASES[case]
    results = []
    for env in ({}, FORCE_EXEC):
        for path, text in files.items():
            await sandbox.write_file(path, textwrap.dedent(text))
        result = await sandbox.exec(argv, stdin="some input\n", env=env)
        written = await sandbox.read_file("unclosed.txt") if case == "finalization" else b""
        results.append((comparable(result), written))
        await sandbox.exec(["rm", "-f", "unclosed.txt"])
    fast, real = results
    assert fast == real
    if case == "finalization":
        order = ["main finished", "thread finished", "atexit ran", "del at teardown"]
        assert fast[0][2].split("\n")[:4] == order
        assert fast[1] == b"written at exit"
    if case == "keyboard-interrupt":
        assert fast[0][:2] == (ExecStatus.KILLED, -2)


async def test_jobs_share_no_state(sandbox: Sandbox) -> None:
    tamper = "import json, sys, unittest, random\njson.leak = 1\nunittest.leak = 2\nsys.path.append('/x')\n"
    assert (await sandbox.exec(["python3", "-c", tamper])).ok
    look = (
        "import json, sys, unittest\n"
        "print(hasattr(json, 'leak'), hasattr(unittest, 'leak'), '/x' in sys.path)"
    )
    check = await sandbox.exec(["python3", "-c", look])
    assert check.stdout == "False False False\n"
    draws = [await sandbox.exec(["python3", "-c", "import random; print(random.random())"]) for _ in range(2)]
    assert draws[0].stdout != draws[1].stdout  # reseeded in every child


async def test_fork_server_is_out_of_reach_of_jobs(sandbox: Sandbox) -> None:
    probe = """
    import os, subprocess, sys
    for name in ("mem", "environ"):
        try:
            open(f"/proc/{os.getppid()}/{name}", "rb").read(1)
            print(name, "readable")
        except PermissionError:
            print(name, "denied")
    # The job itself is an ordinary process: its own children may inspect it.
    child = subprocess.run(["cat", f"/proc/{os.getpid()}/environ"], capture_output=True)
    print("job environ", child.returncode)
    """
    result = await sandbox.exec(["python3", "-c", textwrap.dedent(probe)])
    assert result.stdout.split("\n")[:3] == ["mem denied", "environ denied", "job environ 0"], result


async def test_a_job_that_kills_the_fork_server(sandbox: Sandbox) -> None:
    await sandbox.write_file("kept.txt", "still here")
    result = await sandbox.exec(["python3", "-c", "import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(5)"])
    assert result.status is ExecStatus.KILLED and "fork server" in result.detail, result
    assert (await sandbox.read_file("kept.txt")) == b"still here"  # the sandbox itself carries on
    await wait_for_fork_server(sandbox)


async def test_a_job_that_stops_the_fork_server(sandbox: Sandbox) -> None:
    stop = "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nprint('stopped it')"
    result = await sandbox.exec(["python3", "-c", stop], timeout=1.0)
    assert result.status is ExecStatus.TIMEOUT and result.stdout == "stopped it\n", result
    assert (await sandbox.exec(["python3", "-c", "print('next')"])).stdout == "next\n"
    await wait_for_fork_server(sandbox)
