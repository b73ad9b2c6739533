"""Grading that cannot be gamed (issue 13): hostile submissions against a real server, on both backends.

Each attack is a submission that tries to turn its own failure into an infrastructure failure (which
trainers drop, so the policy would escape its penalty) or to hold the grader for its whole budget. Through
a real server over gRPC, on the local (bubblewrap) backend and on the real Docker engine, every attack must:

* be scored as the submission's own result (no `infra_failure`), with every test graded (none left
  `not_run` because the grader stalled or starved);
* leave nothing behind (no processes, no containers) once its episode is closed;
* not disturb an honest episode graded at the same time on the same server.

Attacks that pollute the sandbox (PID starvation with `setsid`, disk fill, inode flood, FIFOs in place of
output files, signals to the runner) print the right answer as well: every test passing shows that no test
inherits anything from the one before. The load test at the end starves an honest solution of CPU from
outside the sandbox: the result must say so (`InfraError` from "host"), never score it 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import pytest
from code_helpers import SUM_TASK

from palaestra.agents.client import Client
from palaestra.env import InfraError
from palaestra.plugins.code.grader import Grader, GraderSettings
from palaestra.plugins.code.languages import get_language
from palaestra.plugins.code.tasks import task_from_record
from palaestra.sandbox.manager import SandboxManager
from palaestra.sandbox.testing import docker_or_skip, leftovers, wait_for_no_leftovers
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig
from palaestra.types import ComponentStatus

pytestmark = pytest.mark.timeout(600)

BACKENDS = ["local", pytest.param("docker", marks=pytest.mark.docker)]
# Small sandboxes make the fills quick; the per-test allowance is what the attacks try to exhaust.
LIMITS = {"workdir_mb": 16, "workdir_inodes": 2048, "pids": 48, "memory_mb": 256}
ANSWER = "a, b = map(int, input().split())\nprint(a + b)\n"

# A daemon in its own session that keeps the pid limit full: every slot that frees is taken at once.
SETSID_PID_STARVATION = """
import os, time
if os.fork() == 0:
    os.setsid()
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.005)
time.sleep(0.2)
"""
DISK_FILL = """
import os
for directory in ("..", "/workspace", "/tmp", "."):
    for i in range(1000):
        try:
            with open(os.path.join(directory, f"fill-{os.getpid()}-{i}"), "wb") as f:
                for _ in range(4):
                    f.write(b"0" * (1 << 20))
        except OSError:
            break
"""
INODE_FLOOD = """
import os
for directory in ("..", "/workspace", "/tmp", "."):
    for i in range(100000):
        try:
            open(os.path.join(directory, f"i{os.getpid()}-{i}"), "w").close()
        except OSError:
            break
"""
FIFO_OUTPUTS = """
import os
for directory in (".", ".."):
    for name in ("stdout.txt", "stderr.txt", "input.txt", "spec.json"):
        path = os.path.join(directory, name)
        try:
            os.unlink(path)
        except OSError:
            pass
        try:
            os.mkfifo(path)
        except OSError:
            pass
"""
SIGNAL_THE_RUNNER = """
import os, signal
for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):
    try:
        os.kill(1, sig)
    except OSError:
        pass
"""
# Attacks that end or stop the grader itself: the grading ends at once, every test unpassed.
KILL_EVERYTHING = "import os, signal\nos.kill(-1, signal.SIGKILL)\n"
STOP_EVERYTHING = "import os, signal\nos.kill(-1, signal.SIGSTOP)\n"
STOP_THE_GRADER = "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n"

POLLUTING = {
    "setsid_pid_starvation": SETSID_PID_STARVATION,
    "disk_fill": DISK_FILL,
    "inode_flood": INODE_FLOOD,
    "fifo_outputs": FIFO_OUTPUTS,
    "signal_the_runner": SIGNAL_THE_RUNNER,
}
GRADER_KILLING = {
    "kill_everything": KILL_EVERYTHING,
    "stop_everything": STOP_EVERYTHING,
    "stop_the_grader": STOP_THE_GRADER,
}


@dataclass(frozen=True)
class Served:
    address: str
    backend: str
    backends: dict[str, Any]


TASK = task_from_record(SUM_TASK)
BUDGET = Grader(get_language("python"))._budget(TASK, TASK.hidden_tests)


def reply(code: str) -> str:
    return f"```python\n{code}```"


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    backend = str(request.param)
    if backend == "docker":
        docker_or_skip()
    tasks = tmp_path_factory.mktemp("tasks") / "tasks.jsonl"
    tasks.write_text(json.dumps(SUM_TASK) + "\n")
    config = ServerConfig(
        port=0,
        plugin_config={"code": {"include_builtin": False, "task_files": [{"path": str(tasks)}]}},
        sandbox={
            "backend": backend,
            "pool_size": 0,
            "reap_interval_seconds": 0,
            "profiles": {"python": {"limits": LIMITS}},
        },
    )
    with ServerThread(config) as thread:
        assert thread.server is not None
        manager = thread.server.sandboxes
        assert manager is not None and manager.describe() == {"python": backend, "cpp": backend}
        backends = dict(manager.backends)
        yield Served(thread.address, backend, backends)
    assert_nothing_left(backends)


def assert_nothing_left(backends: dict[str, Any], bound: float = 20.0) -> None:
    """No process of a released local sandbox, no container of this server: polled, as they die async."""
    deadline = time.monotonic() + bound
    while any((left := leftovers(backends)).values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(left.values()), f"sandboxes left after their episodes closed: {left}"


def episode(address: str, code: str) -> dict[str, Any]:
    """One single-turn episode of the stdio task; what the grading said about it."""
    with Client(address) as client:
        [opened] = client.open("code/python", seed=0, task="pair-sum")
        started = time.monotonic()
        step = client.step(opened.episode_id, reply(code))
        seconds = time.monotonic() - started
        client.close(opened.episode_id)
    components = {c.name: c.value for c in step.result.components if c.status is ComponentStatus.OK}
    return {
        "done": step.done,
        "infra_failure": step.infra_failure,
        "hidden_fraction": components.get("outcome.hidden_fraction"),
        "statuses": step.result.observation.info.get("hidden_statuses"),
        "seconds": seconds,
    }


def attack_with_honest_neighbour(address: str, attack: str) -> tuple[dict[str, Any], dict[str, Any]]:
    with ThreadPoolExecutor(2) as pool:
        hostile = pool.submit(episode, address, attack)
        time.sleep(0.2)  # the honest episode is graded while the attack runs
        honest = pool.submit(episode, address, ANSWER)
        return hostile.result(), honest.result()


@pytest.mark.parametrize("attack", sorted(POLLUTING))
def test_polluting_attacks_leave_every_next_test_unaffected(server: Served, attack: str) -> None:
    hostile, honest = attack_with_honest_neighbour(server.address, POLLUTING[attack] + ANSWER)
    # Scored, not dropped: and since the program answers correctly, every test passing shows that no
    # test inherited the previous one's processes, files, inodes or FIFOs.
    assert hostile["infra_failure"] is None, hostile
    assert hostile["statuses"] == ["pass", "pass", "pass"], hostile
    assert hostile["hidden_fraction"] == 1.0, hostile
    assert honest["infra_failure"] is None and honest["hidden_fraction"] == 1.0, honest
    assert_nothing_left(server.backends)


@pytest.mark.parametrize("attack", sorted(GRADER_KILLING))
def test_attacks_on_the_grader_score_zero_at_once(server: Served, attack: str) -> None:
    hostile, honest = attack_with_honest_neighbour(server.address, GRADER_KILLING[attack] + ANSWER)
    assert hostile["infra_failure"] is None, hostile
    assert hostile["hidden_fraction"] == 0.0, hostile
    assert hostile["statuses"] == ["not_run"] * 3, hostile
    # A grader that stalled would take at least the grading's whole budget; a stopped one is noticed.
    assert hostile["seconds"] < BUDGET, hostile
    assert honest["infra_failure"] is None and honest["hidden_fraction"] == 1.0, honest
    assert_nothing_left(server.backends)


# ---------------------------------------------------------------- time limits under host load

# About 0.4 s of CPU: within the task's 0.5 s limit on an idle CPU.
HONEST_BUT_BUSY = """
import time
end = time.process_time() + 0.4
while time.process_time() < end:
    pass
a, b = map(int, input().split())
print(a + b)
"""
# Burns its CPU in many processes of its own: the host is not to blame for its time-out.
SELF_INFLICTED_LOAD = (
    """
import os
for _ in range(12):
    if os.fork() == 0:
        while True:
            pass
"""
    + HONEST_BUT_BUSY
)


@pytest.fixture(params=BACKENDS)
async def pinned_manager(request: pytest.FixtureRequest) -> Any:
    """A manager whose sandboxes share CPU 0 with the load the test puts there."""
    backend = str(request.param)
    if backend == "docker":
        docker_or_skip()
    manager = SandboxManager.for_tests(backend=backend, profiles={"python": {"limits": LIMITS}})
    await manager.start()
    manager.pinned_backend = backend  # type: ignore[attr-defined]
    yield manager
    backends = dict(manager.backends)
    await manager.shutdown()
    counts = await wait_for_no_leftovers(backends)
    assert not any(counts.values()), f"left behind: {counts}"


async def lease_on_cpu0(manager: SandboxManager) -> Any:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})  # bubblewrap inherits the event loop thread's affinity
    try:
        sandbox = await manager.lease("python", "episode-load")
    finally:
        os.sched_setaffinity(0, before)
    if manager.pinned_backend == "docker":  # type: ignore[attr-defined]
        container = cast(Any, sandbox)._handle.container  # the test reaches into the backend
        await asyncio.to_thread(container.update, cpuset_cpus="0")
    return sandbox


def cpu0_load(processes: int) -> list[subprocess.Popen[bytes]]:
    def pin() -> None:
        os.sched_setaffinity(0, {0})

    spin = "while True: pass"
    # Each in its own session: with autogroup scheduling a session is one scheduling entity, as the
    # sandbox (its own session or container) is.
    return [
        subprocess.Popen(["python3", "-c", spin], preexec_fn=pin, start_new_session=True)
        for _ in range(processes)
    ]


async def test_starved_honest_solution_is_reported_as_host_overload(pinned_manager: SandboxManager) -> None:
    sandbox = await lease_on_cpu0(pinned_manager)
    burners = cpu0_load(12)
    try:
        with pytest.raises(InfraError) as caught:
            grader = Grader(get_language("python"))
            report = await grader.grade(sandbox, TASK, HONEST_BUT_BUSY, TASK.hidden_tests)
            pytest.fail(f"graded as if the host were idle: {report.outcomes}")
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
        await sandbox.release()
    assert caught.value.source == "host" and "host overload" in str(caught.value), caught.value


async def test_self_inflicted_load_is_the_submissions_timeout(pinned_manager: SandboxManager) -> None:
    # Not pinned, and a longer backstop: the sandbox must get more CPU than the test's limit within the
    # backstop even on a busy machine (a sandbox that got less was starved by the host, and is reported so).
    grader = Grader(get_language("python"), GraderSettings(wall_factor=20.0))
    async with await pinned_manager.lease("python", "episode-self-load") as sandbox:
        report = await grader.grade(sandbox, TASK, SELF_INFLICTED_LOAD, TASK.hidden_tests[:1])
    # Never the host's fault (grade() would raise InfraError("host")): either the answering process got
    # its 0.4 s of CPU before the backstop (a pass: CPU limits are per process, its spinners are its own
    # and die with the test), or the backstop fired while the sandbox had CPU, which is the job's timeout.
    # Which one depends on how fast this machine is; both are the submission's result.
    [outcome] = report.outcomes
    assert outcome.status in {"pass", "timeout"}, report.outcomes


async def test_a_work_dir_filled_by_earlier_jobs_is_reclaimed(pinned_manager: SandboxManager) -> None:
    # As the agent's own programs can in a tool episode, before its submission is graded in that sandbox.
    async with await pinned_manager.lease("python", "episode-full") as sandbox:
        fill = await sandbox.exec(["python3", "-c", INODE_FLOOD + DISK_FILL], timeout=60)
        assert fill.ok, fill
        with pytest.raises(OSError):
            await sandbox.write_file("probe.txt", "x" * 100_000)
        report = await Grader(get_language("python")).grade(sandbox, TASK, ANSWER, TASK.hidden_tests)
    assert [o.status for o in report.outcomes] == ["pass"] * 3, report.outcomes
