"""A bounded chaos run: many echo and some code episodes over many Session streams from client processes,
with client processes SIGKILLed at random, the Docker engine restarted while code episodes are in flight,
the server SIGTERMed (drain) and later SIGKILLed, each time restarted on the same port. Afterwards: no
episode left open on the server, no process left in a killed server's process group, no sandbox container
or container process (runner) of the test's servers left, every episode a surviving client saw ended with
a clean summary or an infrastructure failure, and no step came back as a silent reward 0. The figures go
to stdout (and, by hand, to docs/reliability.md).

The engine restart needs to know which engine it may restart: `PALAESTRA_CHAOS_ENGINE_DIR` names the work
directory of an engine started with `.ci/docker-up.sh DIR` (scripts/test.sh exports it for CI's private
engine). Without it the test skips (fails under CI=true): never point it at an engine others are using.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from palaestra.agents.client import Client
from palaestra.plugins.code.tasks import builtin_tasks
from palaestra.sandbox.docker_backend import LABEL_MANAGED, LABEL_PID
from palaestra.sandbox.testing import running_in_ci

ROOT = Path(__file__).resolve().parents[1]
ENGINE_DIR = "PALAESTRA_CHAOS_ENGINE_DIR"  # the work dir of an engine of .ci/docker-up.sh we may restart
WORK_S = 35.0  # how long the clients play
ECHO_STREAMS, CODE_STREAMS, WORKERS = 6, 1, 4

WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time, random
    from collections import Counter
    from palaestra.agents.client import AsyncClient, PalaestraError
    from palaestra.plugins.code.tasks import builtin_tasks

    address, end_file, echo_streams, code_streams, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), \\
        int(sys.argv[4]), sys.argv[5]
    stats, errors = Counter(), []
    TASK = next(t for t in builtin_tasks() if t.id == "fizzbuzz-word")
    SOLUTION = f"```python\\n{TASK.reference['python']}```"

    def word(step):
        return step.result.observation.messages[0].content.split("'")[1]

    def end():  # the test moves it later while the Docker engine restarts
        with open(end_file) as f:
            return float(f.read())

    async def play(client, code):
        rng = random.Random()
        while time.time() < end():
            try:
                if code:
                    opened = await client.open("code/python-repair", task=TASK.id, seed=rng.randrange(1000))
                else:
                    opened = await client.open("echo", count=8, seed=rng.randrange(10**6))
            except PalaestraError as exc:  # draining or restarting: not an episode yet
                stats["open_refused_" + exc.code.name] += 1
                await asyncio.sleep(0.1)
                continue
            stats["opened"] += len(opened)
            infra = {e.episode_id for e in opened if e.infra_failure}
            live = [e for e in opened if not e.infra_failure]
            try:
                actions = {e.episode_id: (SOLUTION if code else word(e)) for e in live}
                steps = await client.step_many(actions, raise_errors=False) if actions else {}
                for episode_id, step in steps.items():
                    if isinstance(step, PalaestraError):
                        errors.append(f"step {episode_id}: {step}")
                    elif step.infra_failure:
                        infra.add(episode_id)
                    else:
                        values = {c.name: c.value for c in step.result.components}
                        passed = values.get("outcome.all_hidden_pass" if code else "said_word")
                        if passed != 1.0 or step.result.reward <= 0:
                            stats["silent_zero"] += 1
                            errors.append(f"silent zero {episode_id}: {values}")
                summaries = await client.close([e.episode_id for e in opened])
            except PalaestraError as exc:
                errors.append(f"{exc}")
                continue
            for summary in summaries:
                if summary.infra_failure or summary.episode_id in infra:
                    stats["ended_infra_" + ("code" if code else "echo")] += 1
                else:
                    stats["ended_summary_" + ("code" if code else "echo")] += 1
            missing = len(opened) - len(summaries)
            if missing:
                errors.append(f"{missing} episodes got no summary")

    async def main():
        clients = [AsyncClient(address, timeout_s=120) for _ in range(echo_streams + code_streams)]
        await asyncio.gather(*(play(c, i >= echo_streams) for i, c in enumerate(clients)))
        for client in clients:
            await client.aclose()

    asyncio.run(main())
    with open(out, "w") as f:
        json.dump({"stats": stats, "errors": errors[:20]}, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Engine:
    """The private Docker engine that `.ci/docker-up.sh WORK` started: restarted with the same scripts (same
    arguments, same data root: the images stay), and searched for what the test's servers left behind."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.socket = work / "docker" / "docker.sock"
        self.containerd = work / "docker" / "exec" / "containerd" / "containerd.sock"

    def restart(self) -> None:
        for script in ("docker-down.sh", "docker-up.sh"):
            done = subprocess.run(
                [str(ROOT / ".ci" / script), str(self.work)], capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, f"{script} failed: {done.stderr[-2000:]}"

    def containers(self) -> list[dict[str, str]]:
        """The labels of every Palaestra container the engine knows (running or not). Sparse: no
        per-container inspect, which would race with containers removing themselves."""
        import docker

        client = docker.DockerClient(base_url=f"unix://{self.socket}", timeout=60)
        try:
            listed = client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=1"}, sparse=True)
            return [
                dict(c.attrs.get("Labels") or {}, id=c.id, name=(c.attrs.get("Names") or [""])[0])
                for c in listed
            ]
        finally:
            client.close()

    def container_ids(self) -> set[str]:
        import docker

        client = docker.DockerClient(base_url=f"unix://{self.socket}", timeout=60)
        try:
            return {c.id for c in client.containers.list(all=True, sparse=True)}
        finally:
            client.close()

    def shims(self) -> dict[int, str]:
        """This engine's container shims (pid -> container id); each one's child is a container's pid 1, the
        sandbox runner."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                argv
                and argv[0].endswith(b"containerd-shim-runc-v2")
                and str(self.containerd).encode() in argv
            ):
                found[int(entry.name)] = argv[argv.index(b"-id") + 1].decode() if b"-id" in argv else ""
        return found

    def runner_processes(self) -> list[int]:
        """Pids of processes whose parent is one of this engine's shims: the containers' runners."""
        shims = set(self.shims())
        runners = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent in shims:
                runners.append(int(entry.name))
        return runners

    def leftovers(self, server_pids: set[int]) -> tuple[list[str], list[int]]:
        """Containers of the given servers, and shims whose container the engine no longer knows."""
        ours = [c["id"] for c in self.containers() if c.get(LABEL_PID) in {str(p) for p in server_pids}]
        known = self.container_ids()
        orphans = [pid for pid, container in self.shims().items() if container not in known]
        return ours, orphans


def _engine_or_skip() -> Engine:
    work = os.environ.get(ENGINE_DIR)
    if not work:
        message = (
            f"{ENGINE_DIR} is unset: no private Docker engine this test may restart (.ci/docker-up.sh DIR)"
        )
        if running_in_ci():
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    engine = Engine(Path(work).resolve())
    host = os.environ.get("DOCKER_HOST", "")
    assert host.startswith("unix://") and Path(host[len("unix://") :]).resolve() == engine.socket, (
        f"DOCKER_HOST must be the engine of {ENGINE_DIR}={work} (the servers use DOCKER_HOST)"
    )
    return engine


TASK = next(t for t in builtin_tasks() if t.id == "fizzbuzz-word")
SOLUTION = f"```python\n{TASK.reference['python']}```"


def _grade_until_clean(address: str, seconds: float) -> tuple[int, float]:
    """Grade the reference solution on `address` until a step passes cleanly: (episodes that ended as
    infrastructure failures first, seconds it took). A clean step that does not pass fails the test."""
    started = time.monotonic()
    infra = 0
    with Client(address, timeout_s=seconds) as client:
        while time.monotonic() - started < seconds:
            [episode] = client.open("code/python-repair", task=TASK.id)
            step = episode if episode.infra_failure else client.step(episode.episode_id, SOLUTION)
            [summary] = client.close(episode.episode_id)
            if step.infra_failure or summary.infra_failure:
                infra += 1
                time.sleep(1)
                continue
            values = {c.name: c.value for c in step.result.components}
            assert values.get("outcome.all_hidden_pass") == 1.0 and (step.result.reward or 0) > 0, values
            return infra, time.monotonic() - started
    raise AssertionError(f"no clean code grading within {seconds} s ({infra} infrastructure failures)")


class Server:
    def __init__(self, port: int, metrics_port: int, config: Path) -> None:
        self.port, self.metrics_port, self.config = port, metrics_port, config
        self.process: subprocess.Popen[bytes] | None = None
        self.log = config

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def start(self) -> None:
        command = [
            sys.executable, "-m", "palaestra", "serve", "--port", str(self.port),
            "--config", str(self.config), "--metrics-port", str(self.metrics_port),
            "--grace", "30", "--no-store",
            *(f"--disable-plugin={name}" for name in ("math", "games", "tools", "gym")),
        ]  # fmt: skip
        # The log goes to a file: a pipe nobody reads fills up (an engine outage logs a lot) and blocks the
        # server on its next log line.
        self.log = self.config.with_name(f"server-{time.monotonic_ns()}.log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, start_new_session=True, stdout=log, stderr=log)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
                    health = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                if health.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert self.process.poll() is None, "the server exited while starting"
            time.sleep(0.2)
        raise AssertionError("the server did not start")

    def episodes_open(self) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read()
        for line in text.decode().splitlines():
            if line.startswith("palaestra_episodes_open "):
                return float(line.split()[1])
        raise AssertionError("no palaestra_episodes_open gauge")

    def group_empty(self, pid: int, seconds: float = 15) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False


@pytest.mark.timeout(900)
def test_chaos(tmp_path: Path) -> None:
    engine = _engine_or_skip()
    config = tmp_path / "palaestra.toml"
    config.write_text('[sandbox]\nbackend = "docker"\n')
    port = _free_port()
    server = Server(port, _free_port(), config)
    server_pids: set[int] = set()

    def start_server() -> None:
        server.start()
        assert server.process is not None
        server_pids.add(server.process.pid)

    runners_before = len(engine.runner_processes())
    containers_before = len(engine.containers())
    workers: list[subprocess.Popen[bytes]] = []
    try:
        start_server()
        started = time.time()
        end = started + WORK_S
        end_file = tmp_path / "end"

        def set_end(value: float) -> None:  # the clients read it each round: the engine restart extends it
            (tmp_path / "end.new").write_text(repr(value))
            (tmp_path / "end.new").replace(end_file)

        set_end(end)
        rng = random.Random(14)
        outputs: list[Path] = []

        def worker(index: int) -> subprocess.Popen[bytes]:
            out = tmp_path / f"worker-{index}.json"
            outputs.append(out)
            command = [sys.executable, "-c", WORKER, f"127.0.0.1:{port}", str(end_file), str(ECHO_STREAMS),
                       str(CODE_STREAMS), str(out)]  # fmt: skip
            return subprocess.Popen(command)

        workers.extend(worker(i) for i in range(WORKERS))
        faults: Counter[str] = Counter()
        figures: dict[str, object] = {}
        # A fault about every 4 s: clients SIGKILLed (and replaced), the Docker engine restarted, the server
        # drained, then killed.
        schedule = [
            "client",
            "engine_restart",
            "client",
            "server_sigterm",
            "client",
            "server_sigkill",
            "client",
        ]
        for fault in schedule:
            time.sleep(max(0.0, min(end - time.time() - 4, rng.uniform(2.5, 5.0))))
            assert server.process is not None
            pid = server.process.pid
            if fault == "client":
                victim = rng.randrange(len(workers))
                os.kill(workers[victim].pid, signal.SIGKILL)
                workers[victim].wait()
                workers[victim] = worker(len(outputs))
            elif fault == "engine_restart":
                # With code episodes of this server in flight (leased sandboxes are named after episodes).
                waited = time.monotonic()
                while not any(
                    c.get(LABEL_PID) == str(pid) and c.get("name", "").startswith("/palaestra-")
                    for c in engine.containers()
                ):
                    assert time.monotonic() - waited < 120, "no code episode was in flight within 120 s"
                    time.sleep(0.2)
                paused = time.monotonic()
                engine.restart()
                figures["engine_restart_s"] = round(time.monotonic() - paused, 1)
                # The same server grades code again: its dead pool containers are found and replaced.
                infra, seconds = _grade_until_clean(f"127.0.0.1:{port}", 300)
                figures["infra_failures_before_a_clean_grading"] = infra
                figures["seconds_to_a_clean_grading"] = round(seconds, 1)
                end += time.monotonic() - paused  # the clients play on as long as the outage took
                set_end(end)
            else:
                if fault == "server_sigterm":
                    server.process.send_signal(signal.SIGTERM)
                    assert server.process.wait(timeout=60) == 0
                    assert "Traceback" not in server.log.read_text(errors="replace")
                else:
                    server.process.kill()
                    server.process.wait()
                assert server.group_empty(pid), f"processes of the {fault} server outlived it"
                start_server()
            faults[fault] += 1
        for process in workers:
            process.wait(timeout=300)
        stats: Counter[str] = Counter()
        errors: list[str] = []
        finished = [json.loads(path.read_text()) for path in outputs if path.exists()]
        for result in finished:
            stats.update(result["stats"])
            errors.extend(result["errors"])
        deadline = time.monotonic() + 15
        while server.episodes_open() and time.monotonic() < deadline:
            time.sleep(0.1)
        leaked = server.episodes_open()
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        # Containers stop by themselves once their server is gone (the SIGKILLed one's too): wait for that.
        deadline = time.monotonic() + 120
        while any(engine.leftovers(server_pids)) and time.monotonic() < deadline:
            time.sleep(0.5)
        leaked_containers, orphan_shims = engine.leftovers(server_pids)
        ended = sum(v for k, v in stats.items() if k.startswith("ended_"))
        figures = {
            "seconds": round(time.time() - started, 1),
            "faults": dict(faults),
            "finished_client_processes": len(finished),
            **dict(stats),
            **figures,
            "leaked_episodes": leaked,
            "leaked_containers": len(leaked_containers),
            "orphan_container_processes": len(orphan_shims),
            "palaestra_containers_before_after": [containers_before, len(engine.containers())],
            "runner_processes_before_after": [runners_before, len(engine.runner_processes())],
            "errors": errors[:5],
        }
        print("CHAOS", json.dumps(figures))
        assert leaked == 0
        assert leaked_containers == [] and orphan_shims == []
        assert errors == []
        assert stats["silent_zero"] == 0
        assert ended == stats["opened"], (
            "every episode a surviving client opened ended with a summary or infra"
        )
        # Many episodes really ran (thousands on an idle 2-core machine; the count is not a speed target).
        assert stats["ended_summary_echo"] >= 300 and stats["ended_summary_code"] > 0
        assert stats["ended_infra_echo"] > 0  # the server faults really cut episodes
    finally:  # whatever failed: nothing of this test outlives it
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
        server.kill()
