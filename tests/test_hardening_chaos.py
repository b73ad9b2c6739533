"""A bounded chaos run: many echo and some code episodes over many Session streams from client processes,
with client processes SIGKILLed at random, the server SIGTERMed (drain) and later SIGKILLed, each time
restarted on the same port. Afterwards: no episode left open on the server, no process left in a killed
server's process group, every episode a surviving client saw ended with a clean summary or an
infrastructure failure, and no step came back as a silent reward 0. The figures go to stdout (and, by
hand, to docs/reliability.md).
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

WORK_S = 40.0  # how long the clients play
ECHO_STREAMS, CODE_STREAMS, WORKERS = 6, 1, 4

WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time, random
    from collections import Counter
    from palaestra.agents.client import AsyncClient, PalaestraError
    from palaestra.plugins.code.tasks import builtin_tasks

    address, end, echo_streams, code_streams, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), \\
        int(sys.argv[4]), sys.argv[5]
    stats, errors = Counter(), []
    TASK = next(t for t in builtin_tasks() if t.id == "fizzbuzz-word")
    SOLUTION = f"```python\\n{TASK.reference['python']}```"

    def word(step):
        return step.result.observation.messages[0].content.split("'")[1]

    async def play(client, code):
        rng = random.Random()
        while time.time() < end:
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
        clients = [AsyncClient(address, timeout_s=60) for _ in range(echo_streams + code_streams)]
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


class Server:
    def __init__(self, port: int, metrics_port: int, config: Path) -> None:
        self.port, self.metrics_port, self.config = port, metrics_port, config
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "palaestra", "serve", "--port", str(self.port),
            "--config", str(self.config), "--metrics-port", str(self.metrics_port),
            "--grace", "30", "--no-store",
            *(f"--disable-plugin={name}" for name in ("math", "games", "tools", "gym")),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE)
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


@pytest.mark.timeout(300)
def test_chaos(tmp_path: Path) -> None:
    config = tmp_path / "palaestra.toml"
    config.write_text('[sandbox]\nbackend = "auto"\nallow_weaker_isolation = true\n')
    port = _free_port()
    server = Server(port, _free_port(), config)
    server.start()
    started = time.time()
    end = started + WORK_S
    rng = random.Random(14)
    outputs: list[Path] = []

    def worker(index: int) -> subprocess.Popen[bytes]:
        out = tmp_path / f"worker-{index}.json"
        outputs.append(out)
        command = [sys.executable, "-c", WORKER, f"127.0.0.1:{port}", str(end), str(ECHO_STREAMS),
                   str(CODE_STREAMS), str(out)]  # fmt: skip
        return subprocess.Popen(command)

    workers = [worker(i) for i in range(WORKERS)]
    faults: Counter[str] = Counter()
    killed_servers: list[int] = []
    # A fault about every 4 s: clients SIGKILLed (and replaced), the server drained, then killed.
    schedule = ["client", "client", "server_sigterm", "client", "server_sigkill", "client", "client"]
    for fault in schedule:
        time.sleep(max(0.0, min(end - time.time() - 4, rng.uniform(2.5, 5.0))))
        if fault == "client":
            victim = rng.randrange(len(workers))
            os.kill(workers[victim].pid, signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = worker(len(outputs))
        else:
            assert server.process is not None
            pid = server.process.pid
            if fault == "server_sigterm":
                server.process.send_signal(signal.SIGTERM)
                assert server.process.wait(timeout=60) == 0
                assert b"Traceback" not in (server.process.stderr.read() if server.process.stderr else b"")
            else:
                server.process.kill()
                server.process.wait()
                killed_servers.append(pid)
            assert server.group_empty(pid), f"processes of the {fault} server outlived it"
            server.start()
        faults[fault] += 1
    for process in workers:
        process.wait(timeout=180)
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
    ended = sum(v for k, v in stats.items() if k.startswith("ended_"))
    figures = {
        "seconds": round(time.time() - started, 1),
        "faults": dict(faults),
        "finished_client_processes": len(finished),
        **dict(stats),
        "leaked_episodes": leaked,
        "errors": errors[:5],
    }
    print("CHAOS", json.dumps(figures))
    assert leaked == 0
    assert errors == []
    assert stats["silent_zero"] == 0
    assert ended == stats["opened"], "every episode a surviving client opened ended with a summary or infra"
    # Many episodes really ran (thousands on an idle 2-core machine; the count is not a speed target).
    assert stats["ended_summary_echo"] >= 300 and stats["ended_summary_code"] > 0
    assert stats["ended_infra_echo"] > 0  # the server faults really cut episodes
