"""Client resilience against a real server: restarts, deadlines, close, fork."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from palaestra.agents.client import AsyncClient, Client, PalaestraError
from palaestra.agents.gym import InfraFailureError, RemoteEnv
from palaestra.agents.vector import RemoteVectorEnv
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig

StartServer = Callable[..., ServerThread]
ONLY_ECHO = ["code", "math", "games", "tools"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(port: int) -> ServerThread:
    return ServerThread(ServerConfig(port=port, disabled_plugins=ONLY_ECHO)).start()


def test_a_client_survives_a_server_restart() -> None:
    port = _free_port()
    server = _server(port)
    with Client(f"127.0.0.1:{port}", timeout_s=30) as client:
        opened = client.open("echo/text", count=3)
        assert client.step(opened[0].episode_id, "a").infra_failure is None
        server.stop(grace=0)
        server = _server(port)
        try:
            # The old episodes died with the old server: they end as infrastructure failures...
            steps = client.step_many({e.episode_id: "b" for e in opened}, raise_errors=False)
            assert all(isinstance(s, object) and s.infra_failure for s in steps.values())  # type: ignore[union-attr]
            [summary, *_] = client.close([e.episode_id for e in opened])
            assert summary.infra_failure is not None and summary.close_reason == "connection_lost"
            # ...and the same client opens new ones on the new server.
            [fresh] = client.open("echo/text")
            assert client.step(fresh.episode_id, "c").result.observation.messages[0].content == "You said: c"
        finally:
            server.stop(grace=0)


def test_the_gym_wrappers_recover_after_a_restart() -> None:
    port = _free_port()
    server = _server(port)
    env = RemoteEnv(f"127.0.0.1:{port}", "gym/CartPole-v1", timeout_s=30)
    vector = RemoteVectorEnv(f"127.0.0.1:{port}", "gym/CartPole-v1", num_envs=4, timeout_s=30)
    try:
        env.reset(seed=0)
        vector.reset(seed=0)
        server.stop(grace=0)
        server = _server(port)
        with pytest.raises(InfraFailureError):
            env.step(0)
        with pytest.raises(InfraFailureError):
            vector.step(vector.action_space.sample())
        obs, _ = env.reset(seed=1)  # a new episode on the new server
        assert env.step(0)[0].shape == obs.shape
        vector.reset(seed=1)
        assert vector.step(vector.action_space.sample())[0].shape == (4, 4)
    finally:
        env.close()
        vector.close()
        server.stop(grace=0)


def test_requests_have_deadlines(start_server: StartServer) -> None:
    server = start_server(plugin_modules=["plugin_for_tests"], disabled_plugins=ONLY_ECHO)
    with Client(server.address, timeout_s=0.5) as client:
        [slow] = client.open("test/slow-async")
        with pytest.raises(PalaestraError) as late:
            client.step(slow.episode_id, "30")
        assert late.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_no_hang_after_close(start_server: StartServer) -> None:
    server = start_server(disabled_plugins=ONLY_ECHO)
    client = Client(server.address)
    [first] = client.open("echo/text")
    client.close_client()
    with pytest.raises(PalaestraError) as closed:
        client.step(first.episode_id, "x")
    assert closed.value.code is grpc.StatusCode.CANCELLED
    env = RemoteEnv(server.address, "gym/CartPole-v1")
    env.reset(seed=0)
    env.close()
    obs, _ = env.reset(seed=0)  # reset after close: a new client and episode, never a hang
    assert obs.shape == (4,)
    env.close()


def _child_uses(client: Client, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """A client made before the fork, used in the child."""
    try:
        [episode] = client.open("echo/text")
        queue.put(client.step(episode.episode_id, "inherited").result.observation.messages[0].content)
        client.close_client()
    except Exception as exc:
        queue.put(f"{type(exc).__name__}: {exc}")


def _child_makes_a_client(address: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """A new client made in the child, and the parent's episode, which is not the child's."""
    try:
        with Client(address, timeout_s=20) as client:
            [episode] = client.open("echo/text")
            queue.put(client.step(episode.episode_id, "new").result.observation.messages[0].content)
            parents = queue.get(timeout=30)
            try:
                client.step(parents, "not mine")
                queue.put("stepped the parent's episode")
            except PalaestraError as exc:
                queue.put(exc.code.name)
    except Exception as exc:
        queue.put(f"{type(exc).__name__}: {exc}")


def _async_client_in_child(address: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        AsyncClient(address)
        queue.put("made")
    except PalaestraError as exc:
        queue.put(f"{exc.code.name}: {exc.message}")


def _child_connects(address: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    with Client(address, timeout_s=20) as client:
        [episode] = client.open("echo/text")
        queue.put(client.step(episode.episode_id, "child").result.observation.messages[0].content)


def _forked_child(target: Any, *args: Any) -> tuple[Any, Any]:
    forked = multiprocessing.get_context("fork")
    queue = forked.Queue()
    # daemonic, as in multiprocessing pools and SB3's SubprocVecEnv: such a child may not start
    # multiprocessing children, so the client's helper must not be one
    child = forked.Process(target=target, args=(*args, queue), daemon=True)
    child.start()
    return child, queue


@pytest.mark.timeout(180)
def test_clients_work_in_forked_children_and_spawned_ones(start_server: StartServer) -> None:
    server = start_server(disabled_plugins=ONLY_ECHO)
    with Client(server.address, timeout_s=20) as client:
        [mine] = client.open("echo/text")
        for _ in range(3):  # a client made before the fork rebuilds its channel in the child
            child, queue = _forked_child(_child_uses, client)
            assert queue.get(timeout=60) == "You said: inherited"
            child.join(timeout=30)
        child, queue = _forked_child(_child_makes_a_client, server.address)
        assert queue.get(timeout=60) == "You said: new"
        queue.put(mine.episode_id)
        assert queue.get(timeout=30) == "NOT_FOUND"  # episodes belong to the stream that opened them
        child.join(timeout=30)
        child, queue = _forked_child(_async_client_in_child, server.address)
        answer = queue.get(timeout=30)  # at once, never a hang
        child.join(timeout=30)
        assert answer.startswith("FAILED_PRECONDITION") and "forkserver" in answer
        spawned = multiprocessing.get_context("spawn")
        queue = spawned.Queue()
        spawned_child = spawned.Process(target=_child_connects, args=(server.address, queue))
        spawned_child.start()
        assert queue.get(timeout=60) == "You said: child"
        spawned_child.join(timeout=30)
        # The parent's client and episode are untouched.
        assert client.step(mine.episode_id, "parent").result.observation.messages[0].content == (
            "You said: parent"
        )


@pytest.mark.timeout(120)
def test_a_hung_server_is_noticed_by_keepalive() -> None:
    """A server that stops answering (SIGSTOP) is found dead by the client's keepalive: the waiting step
    ends as an infrastructure failure long before the request's own deadline."""
    import subprocess
    import sys
    import time

    port = _free_port()
    disabled = [f"--disable-plugin={name}" for name in ("code", "math", "games", "tools", "gym")]
    command = [sys.executable, "-m", "palaestra", "serve", "--port", str(port), "--no-store", *disabled]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        with Client(f"127.0.0.1:{port}", timeout_s=90, keepalive_s=1) as client:
            [episode] = client.open("echo")  # waits for the server to come up
            os.kill(server.pid, signal.SIGSTOP)
            started = time.monotonic()
            step = client.step(episode.episode_id, "anyone there?")
            waited = time.monotonic() - started
        assert step.infra_failure is not None and step.infra_failure.source == "connection"
        assert waited < 60, f"the step waited {waited:.0f} s: keepalive did not notice the hung server"
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()


def test_client_errors_cross_process_boundaries_with_their_type() -> None:
    """A forked child's client gets its errors from a helper process, pickled: StreamBroken must stay
    StreamBroken (vectors and trainers tell a lost server from a refusal by it)."""
    import pickle

    from palaestra.agents.client import StreamBroken

    crossed = pickle.loads(pickle.dumps(StreamBroken(grpc.StatusCode.UNAVAILABLE, "server gone")))
    assert type(crossed) is StreamBroken and crossed.code is grpc.StatusCode.UNAVAILABLE
    assert crossed.message == "server gone" and str(crossed) == "UNAVAILABLE: server gone"
