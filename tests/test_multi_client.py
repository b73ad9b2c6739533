"""`Client` / `AsyncClient` over several addresses against real test servers (no Ray): the address forms, an
unreachable replica skipped for new episodes, unknown episodes NOT_FOUND, and a drained server that refuses
new episodes while its open ones go on. The cluster behaviour (directory, placement by reported capacity,
failures, drain through the replica actor) is in test_cluster.py."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from palaestra.agents.client import AsyncClient, Client, PalaestraError, replica_addresses
from palaestra.agents.multi import MultiAsyncClient
from palaestra.server.app import ServerThread
from palaestra.types import EpisodeStep

pytestmark = pytest.mark.timeout(60)


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once the socket is closed


def _multi(client: Client) -> MultiAsyncClient:
    assert isinstance(client.aio, MultiAsyncClient), type(client.aio)
    return client.aio


def test_address_forms() -> None:
    assert replica_addresses("127.0.0.1:1") is None  # one server: a plain AsyncClient
    assert replica_addresses("127.0.0.1:1, 127.0.0.1:2") == (["127.0.0.1:1", "127.0.0.1:2"], None)
    assert replica_addresses(["127.0.0.1:1"]) == (["127.0.0.1:1"], None)
    assert replica_addresses("directory:mine") == ([], "mine")
    assert replica_addresses("directory:") == ([], "")  # the default directory
    with pytest.raises(ValueError, match="at least one server address"):
        replica_addresses([])
    assert type(AsyncClient.__new__(AsyncClient, "127.0.0.1:1")) is AsyncClient
    assert type(AsyncClient.__new__(AsyncClient, "127.0.0.1:1,127.0.0.1:2")) is MultiAsyncClient
    with pytest.raises(ValueError, match="addresses or a directory"):
        MultiAsyncClient()


def test_an_unreachable_replica_is_skipped_and_unknown_episodes_are_not_found(server_address: str) -> None:
    dead = _closed_port()
    with Client([dead, server_address], timeout_s=20) as client:
        opened = [client.open("echo", seed=i, count=2) for i in range(3)]
        ids = [e.episode_id for group in opened for e in group]
        assert {_multi(client).replica_of(i) for i in ids} == {server_address}
        assert dead in _multi(client).down_until  # noticed, and avoided for down_s
        steps = client.step_many({i: "hi" for i in ids})
        for step in steps.values():
            assert isinstance(step, EpisodeStep)
            assert step.agents["agent"].observation.messages[-1].content == "You said: hi"
        with pytest.raises(PalaestraError) as caught:
            client.step("no-such-episode", "x")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert len(client.close(ids)) == len(ids)


def test_a_drained_server_refuses_new_episodes_and_finishes_its_open_ones(
    start_server: Callable[..., ServerThread],
) -> None:
    drained, other = start_server(), start_server()
    addresses = f"{drained.address},{other.address}"  # the comma form, as `--address` takes it
    with Client(addresses, timeout_s=20) as client, Client(drained.address, timeout_s=20) as direct:
        before = [e.episode_id for i in range(4) for e in client.open("echo", seed=i, count=2)]
        assert {_multi(client).replica_of(i) for i in before} == {drained.address, other.address}
        assert drained.server is not None
        drained.server.drain()

        with pytest.raises(PalaestraError) as caught:  # a direct open there is refused, saying why
            direct.open("echo")
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert "replica draining: open episodes on another replica" in caught.value.message

        after = [e.episode_id for _ in range(4) for e in client.open("echo", count=2)]
        assert {_multi(client).replica_of(i) for i in after} == {other.address}  # opened elsewhere
        steps = client.step_many({i: "on" for i in before + after})  # in-flight episodes go on there
        for step in steps.values():
            assert isinstance(step, EpisodeStep) and step.infra_failure is None
            assert step.agents["agent"].observation.messages[-1].content == "You said: on"
        summaries = client.close(before + after)
        assert len(summaries) == len(before + after) and all(s.infra_failure is None for s in summaries)
        assert client.server_info().max_episodes > 0  # catalog calls still answered (health: SERVING)

        assert other.server is not None
        other.server.drain()
        with pytest.raises(PalaestraError) as caught:  # every replica drained: nowhere to open
            client.open("echo")
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert "replica draining" in caught.value.message


def test_vectors_are_placed_on_one_replica_each_and_stay_there(
    start_server: Callable[..., ServerThread],
) -> None:
    """The columnar RemoteVectorEnv (agents/vector.py) unchanged over two replicas: each vector's open is
    placed like an open of its episodes, and its steps, resets and close go to its replica."""
    pytest.importorskip("gymnasium")
    from palaestra.agents.vector import RemoteVectorEnv

    servers = [start_server(), start_server()]
    with Client([s.address for s in servers], timeout_s=20) as client:
        envs = [RemoteVectorEnv(client, "gym/CartPole-v1", num_envs=4) for _ in range(2)]
        for seed, env in enumerate(envs):
            observations, _ = env.reset(seed=seed)
            assert observations.shape == (4, 4)
            for _ in range(3):
                observations, rewards, *_ = env.step(env.action_space.sample())
                assert observations.shape == (4, 4) and rewards.shape == (4,)
        homes = {_multi(client).vectors[env.vector_id][0] for env in envs}
        assert homes == {s.address for s in servers}  # one vector on each replica
        for env in envs:
            env.close()
        assert _multi(client).vectors == {}
        assert all(_multi(client).open_here[s.address] == 0 for s in servers)


def _opened(thread: ServerThread) -> float:
    """Episodes a test server has opened since it started (its own counter)."""
    assert thread.server is not None
    families = thread.server.runtime.metrics.episodes_opened.collect()
    return sum(s.value for f in families for s in f.samples if s.name.endswith("_total"))


def test_palaestra_eval_over_two_addresses_spreads_its_episodes(
    start_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """`palaestra eval --address h1:p1,h2:p2`: the same command, its episodes on both servers."""
    from stub_openai import StubOpenAI

    from palaestra.cli import main

    servers = [start_server(), start_server()]
    out = tmp_path / "eval.jsonl"
    with StubOpenAI(say_the_word) as stub:
        address = ",".join(s.address for s in servers)
        command = ["eval", "echo", "--base-url", stub.base_url, "--model", "stub", "--no-progress"]
        code = main([*command, "--episodes", "2", "--tasks", "6", "--out", str(out), "--address", address])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12 and all(r["infra_failure"] is None and r["return"] > 0 for r in records)
    opened = [_opened(s) for s in servers]
    assert sum(opened) == 12 and min(opened) > 0, opened  # both servers ran some of them


def say_the_word(messages: list[dict[str, Any]]) -> str:
    """The echo environment's prompt is "Please say the word 'W'."; answer W."""
    return next(str(m["content"]).split("'")[1] for m in messages if "say the word" in str(m["content"]))
