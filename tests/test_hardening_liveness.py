"""Liveness: a client that dies leaves nothing behind, silent streams end, gauges stay true, and the
drain keeps answering health probes with NOT_SERVING while in-flight requests finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import grpc
import plugin_for_tests  # noqa: F401 - the test plugin's module must be importable
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from palaestra.agents.client import Client, PalaestraError
from palaestra.server.app import ServerThread

StartServer = Callable[..., ServerThread]
ONLY_ECHO = ["code", "math", "games", "tools", "gym"]

# A real client in its own process: opens 50 episodes on its Session stream, says so, then waits to die.
CLIENT = textwrap.dedent(
    """
    import sys, time
    from palaestra.agents.client import Client
    client = Client(sys.argv[1])
    opened = client.open("echo/text", count=50)
    client.step(opened[0].episode_id, "still here")
    print(len(opened), flush=True)
    time.sleep(600)
    """
)


def _open_episodes(server: ServerThread) -> int:
    assert server.server is not None
    return len(server.server.runtime.table)


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.mark.timeout(180)
def test_sigkilled_clients_leave_no_episodes(start_server: StartServer) -> None:
    server = start_server(disabled_plugins=ONLY_ECHO)
    leaks = []
    for _round in range(5):  # 5 rounds of 4 concurrent clients: 20 kills
        clients = [
            subprocess.Popen(
                [sys.executable, "-c", CLIENT, server.address], stdout=subprocess.PIPE, text=True
            )
            for _ in range(4)
        ]
        try:
            for process in clients:
                assert process.stdout is not None
                assert process.stdout.readline().strip() == "50"
            assert _open_episodes(server) == 200
        finally:
            for process in clients:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        _wait_for(lambda: _open_episodes(server) == 0, 10)
        leaks.append(_open_episodes(server))
    assert leaks == [0] * 5
    assert server.server is not None
    registry = server.server.runtime.metrics.registry
    assert registry.get_sample_value("palaestra_episodes_open") == 0


def test_a_silent_stream_is_ended_and_its_episodes_closed(start_server: StartServer) -> None:
    server = start_server(disabled_plugins=ONLY_ECHO, stream_idle_timeout_s=0.5)
    with Client(server.address) as client:
        [first] = client.open("echo/text")
        assert _wait_for(lambda: _open_episodes(server) == 0, 10), "the idle stream kept its episode"
        lost = client.step(first.episode_id, "late")  # the client learns it is gone: an infra failure
        assert lost.infra_failure is not None and lost.done
        [fresh] = client.open("echo/text")  # and a new stream serves new episodes
        assert client.step(fresh.episode_id, "hi").result.observation.messages[0].content == "You said: hi"


def test_drain_answers_not_serving_while_in_flight_steps_finish(start_server: StartServer) -> None:
    server = start_server(
        plugin_modules=["plugin_for_tests"], disabled_plugins=["code", "math", "games", "tools"]
    )
    statuses: list[int] = []
    with Client(server.address) as client, grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        [slow] = client.open("test/slow-async")
        results = []
        worker = threading.Thread(target=lambda: results.append(client.step(slow.episode_id, "1.5")))
        worker.start()
        time.sleep(0.2)
        stopper = threading.Thread(target=server.stop, kwargs={"grace": 30})
        stopper.start()
        time.sleep(0.5)
        statuses.append(health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)
        with pytest.raises(PalaestraError) as refused:
            client.aio.timeout_s = 5
            client.open("echo/text")
        worker.join(timeout=20)
        stopper.join(timeout=30)
    assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING]
    assert refused.value.code is grpc.StatusCode.UNAVAILABLE
    assert results and results[0].result.reward == 1.0


@pytest.mark.timeout(120)
def test_keepalive_finds_a_hung_client(start_server: StartServer) -> None:
    """A client that stops answering (SIGSTOP: its connection stays open) is found dead by the server's
    keepalive pings, and its stream's episodes close."""
    server = start_server(disabled_plugins=ONLY_ECHO, keepalive_time_s=1.0, keepalive_timeout_s=1.0)
    process = subprocess.Popen(
        [sys.executable, "-c", CLIENT, server.address], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "50"
        os.kill(process.pid, signal.SIGSTOP)
        assert _wait_for(lambda: _open_episodes(server) == 0, 30), "the hung client kept its episodes"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
