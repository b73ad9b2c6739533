"""The server's behaviour over real gRPC: errors, isolation of failures, limits, auth, health, shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import plugin_for_tests
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from palaestra.agents.client import AsyncClient, Client, PalaestraError
from palaestra.server.app import ServerThread
from palaestra.v1 import env_pb2, env_pb2_grpc

StartServer = Callable[..., ServerThread]
TEST_PLUGIN = ["plugin_for_tests"]


@pytest.fixture
def test_server(start_server: StartServer) -> ServerThread:
    return start_server(plugin_modules=TEST_PLUGIN, disabled_plugins=["code", "math", "games", "tools"])


def test_environment_exception_is_an_infra_failure_and_server_keeps_serving(
    test_server: ServerThread,
) -> None:
    with Client(test_server.address) as client:
        [crashing] = client.open("test/crash")
        [healthy] = client.open("test/crash")
        step = client.step(crashing.episode_id, "crash")
        assert step.infra_failure is not None
        assert step.infra_failure.source == "environment"
        assert "divided by zero" in step.infra_failure.message
        assert step.agents == {}, "no reward of any kind travels with an infrastructure failure"
        assert step.done
        with pytest.raises(PalaestraError) as refused:
            client.step(crashing.episode_id, "again")
        assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert client.step(healthy.episode_id, "fine").result.reward == 1.0
        [summary] = client.close(crashing.episode_id)
        assert summary.infra_failure is not None


def test_verifier_failure_is_reported_with_its_source(test_server: ServerThread) -> None:
    with Client(test_server.address) as client:
        [first] = client.open("test/broken-verifier")
        step = client.step(first.episode_id, "answer")
        assert step.infra_failure is not None and step.infra_failure.source == "verifier"


async def test_slow_sync_environment_does_not_block_other_episodes(test_server: ServerThread) -> None:
    async with AsyncClient(test_server.address) as client:
        [slow] = await client.open("test/slow-sync")
        [fast] = await client.open("test/crash")
        slow_step = asyncio.create_task(client.step(slow.episode_id, "1.5"))
        await asyncio.sleep(0.05)
        for _ in range(5):
            await client.step(fast.episode_id, "ok")
        assert not slow_step.done(), "fast steps were answered while the blocking step was still running"
        assert (await slow_step).result.reward == 1.0


def test_batch_reports_per_episode_errors_and_steps_the_rest(test_server: ServerThread) -> None:
    with Client(test_server.address) as client:
        good = [s.episode_id for s in client.open("test/crash", count=3)]
        results = client.step_many({**{g: "ok" for g in good}, "missing-episode": "ok"}, raise_errors=False)
        for episode_id in good:
            assert not isinstance(results[episode_id], PalaestraError)
        missing = results["missing-episode"]
        assert isinstance(missing, PalaestraError) and missing.code is grpc.StatusCode.NOT_FOUND


def test_capacity_limits_are_resource_exhausted(start_server: StartServer) -> None:
    server = start_server(max_episodes=4, max_episodes_per_client=3)
    with Client(server.address) as first, Client(server.address) as second:
        first.open("echo/text", count=3)
        with pytest.raises(PalaestraError) as per_client:
            first.open("echo/text")
        assert per_client.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        second.open("echo/text")
        with pytest.raises(PalaestraError) as total:
            second.open("echo/text")
        assert total.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 4" in total.value.message


def test_stream_end_closes_its_episodes(test_server: ServerThread) -> None:
    with Client(test_server.address) as client:
        [first] = client.open("test/alternating")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        closed = [s for s in plugin_for_tests.FINISHED if s.episode_id == first.episode_id]
        if closed:
            assert closed[0].close_reason == "stream_ended"
            return
        time.sleep(0.05)
    pytest.fail("the episode was not closed when its stream ended")


def test_turn_based_checks_whose_turn_it_is(test_server: ServerThread) -> None:
    with Client(test_server.address) as client:
        [first] = client.open("test/alternating")
        assert first.next_agent == "north"
        with pytest.raises(PalaestraError) as refused:
            client.step(first.episode_id, {"south": 0})
        assert (
            refused.value.code is grpc.StatusCode.INVALID_ARGUMENT and "north's turn" in refused.value.message
        )
        step = client.step(first.episode_id, 1)  # empty agent: whoever is to move
        assert step.next_agent == "south" and step.agents["north"].reward == 1.0
        with pytest.raises(PalaestraError) as unknown:
            client.step(first.episode_id, {"west": 0})
        assert "north, south" in unknown.value.message


def test_bad_open_options_are_invalid_argument(test_server: ServerThread) -> None:
    with Client(test_server.address) as client, pytest.raises(PalaestraError) as refused:
        client.open("test/alternating", options={"fail_to_start": True})
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_unary_mirror_and_idle_reaper(start_server: StartServer) -> None:
    server = start_server(idle_timeout_s=0.3)
    with grpc.insecure_channel(server.address) as channel:
        stub = env_pb2_grpc.EnvServiceStub(channel)
        opened = stub.Open(env_pb2.OpenRequest(env_id="echo/text", seed=4))
        episode_id = opened.episodes[0].episode_id
        step = stub.Step(
            env_pb2.StepRequest(
                episodes=[env_pb2.EpisodeActions(episode_id=episode_id, actions=[{"action": {"text": "hi"}}])]
            )
        )
        assert step.episodes[0].agents[0].observation.messages[0].content == "You said: hi"
        time.sleep(1.5)
        with pytest.raises(grpc.RpcError) as gone:
            stub.CloseEpisodes(env_pb2.CloseRequest(episode_ids=[episode_id]))
        assert gone.value.code() is grpc.StatusCode.NOT_FOUND


def test_bearer_token_auth(start_server: StartServer) -> None:
    server = start_server(auth_token="s3cret")
    with Client(server.address) as anonymous:
        with pytest.raises(PalaestraError) as refused:
            anonymous.list_envs()
        assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(PalaestraError) as stream_refused:
            anonymous.open("echo/text")
        assert stream_refused.value.code is grpc.StatusCode.UNAUTHENTICATED
    with Client(server.address, token="s3cret") as client:
        assert client.open("echo/text")[0].episode_id
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_health_and_reflection(server_address: str) -> None:
    with grpc.insecure_channel(server_address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="palaestra.v1.EnvService")
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [reply] = list(
            stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        )
        names = {s.name for s in reply.list_services_response.service}
        assert {"palaestra.v1.EnvService", "palaestra.v1.EnvCatalog", "grpc.health.v1.Health"} <= names


def test_graceful_shutdown_finishes_in_flight_steps(start_server: StartServer) -> None:
    server = start_server(plugin_modules=TEST_PLUGIN, disabled_plugins=["code", "math", "games", "tools"])
    with Client(server.address) as client:
        [slow] = client.open("test/slow-async")
        results = []
        worker = threading.Thread(target=lambda: results.append(client.step(slow.episode_id, "1.0")))
        worker.start()
        time.sleep(0.2)
        server.stop(grace=10)
        worker.join(timeout=20)
        assert results and results[0].result.reward == 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_metrics(start_server: StartServer) -> None:
    port = _free_port()
    server = start_server(metrics_port=port)
    with Client(server.address) as client:
        [first] = client.open("echo/text")
        client.step(first.episode_id, "x")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'palaestra_steps_total{env="echo/text"} 1.0' in text
    assert "palaestra_step_latency_seconds_bucket" in text


def test_tls(start_server: StartServer, tls_certificate: tuple[Path, Path]) -> None:
    cert, key = tls_certificate
    server = start_server(host="localhost", tls_cert=str(cert), tls_key=str(key))
    with Client(f"localhost:{server.server.port}", tls_root_cert=cert) as client:  # type: ignore[union-attr]
        assert client.open("echo/text")[0].episode_id
