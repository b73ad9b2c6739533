"""The transport's fast paths keep their promises: coalesced steps and resets each get their own result,
and per-step trajectories are built only when a plugin listens for them."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from palaestra.agents.client import COALESCED_PER_MESSAGE, AsyncClient, Client, PalaestraError
from palaestra.pluginmanager import load_plugins
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig
from palaestra.server.runtime import Runtime
from palaestra.v1 import env_pb2

OTHER_PLUGINS = ["code", "math", "games", "tools"]


def spy_on_messages(client: AsyncClient, note: Callable[[env_pb2.SessionRequest], Any]) -> None:
    """Call `note(request)` for every message the client puts on its stream."""
    send = client._send

    def spy(request: env_pb2.SessionRequest, *args: Any) -> Any:
        note(request)
        return send(request, *args)

    client._send = spy  # type: ignore[method-assign,assignment]


def count_messages(client: AsyncClient) -> list[str]:
    """Record the kind of every message the client puts on its stream."""
    kinds: list[str] = []
    spy_on_messages(client, lambda request: kinds.append(str(request.WhichOneof("request"))))
    return kinds


async def test_concurrent_steps_share_a_message_and_keep_their_own_results(server_address: str) -> None:
    async with AsyncClient(server_address) as client:
        opened = await client.open("echo/text", seed=0, count=6)
        ids = [step.episode_id for step in opened]
        kinds = count_messages(client)
        texts = [f"text number {i}" for i in range(len(ids))]
        actions: list[Any] = list(texts)
        actions[2] = 7  # a discrete action for a chat env: refused, the others go on
        results = await asyncio.gather(
            *(client.step(i, a) for i, a in zip(ids, actions, strict=True)), return_exceptions=True
        )
    assert kinds == ["step"]
    for index, (text, result) in enumerate(zip(texts, results, strict=True)):
        if index == 2:
            assert isinstance(result, PalaestraError)
            assert result.code == grpc.StatusCode.INVALID_ARGUMENT
        else:
            assert not isinstance(result, BaseException)
            assert result.result.observation.messages[0].content == f"You said: {text}"


async def test_many_concurrent_steps_travel_in_messages_of_at_most_coalesced_per_message(
    server_address: str,
) -> None:
    """Coalesced steps are split into messages of COALESCED_PER_MESSAGE, so the server steps one while the
    client prepares the next; each caller still gets its own episode's result."""
    count = 2 * COALESCED_PER_MESSAGE + 6
    async with AsyncClient(server_address) as client:
        ids = [step.episode_id for step in await client.open("echo/text", seed=0, count=count)]
        sizes: list[int] = []
        spy_on_messages(client, lambda request: sizes.append(len(request.step.episodes)))
        results = await asyncio.gather(*(client.step(i, f"text {n}") for n, i in enumerate(ids)))
    assert sizes == [COALESCED_PER_MESSAGE, COALESCED_PER_MESSAGE, 6]
    assert [r.episode_id for r in results] == ids
    assert [r.result.observation.messages[0].content for r in results] == [
        f"You said: text {n}" for n in range(count)
    ]


async def test_concurrent_resets_share_a_message_and_honour_their_seeds(server_address: str) -> None:
    async with AsyncClient(server_address) as client:
        opened = await client.open("echo/text", seed=0, count=5)
        kinds = count_messages(client)
        seeds = list(range(10, 15))
        resets = await asyncio.gather(
            *(client.reset(s.episode_id, seed=n) for s, n in zip(opened, seeds, strict=True))
        )
        fresh = [(await client.open("echo/text", seed=n))[0] for n in seeds]
    assert kinds[0] == "reset" and kinds.count("reset") == 1
    assert [r.result.observation.messages for r in resets] == [f.result.observation.messages for f in fresh]


async def test_steps_of_one_episode_in_one_turn_run_in_order(server_address: str) -> None:
    async with AsyncClient(server_address) as client:
        [first] = await client.open("echo/text", seed=0, options={"turns": 8})
        results = await asyncio.gather(*(client.step(first.episode_id, f"word {i}") for i in range(3)))
    assert [r.step_index for r in results] == [1, 2, 3]


async def test_a_broken_stream_ends_every_waiting_step_as_an_infra_failure() -> None:
    thread = ServerThread(ServerConfig(port=0, disabled_plugins=OTHER_PLUGINS)).start()
    client = AsyncClient(thread.address, timeout_s=5)
    try:
        opened = await client.open("echo/text", seed=0, count=3)
        thread.stop(grace=0)
        results = await asyncio.gather(*(client.step(s.episode_id, "x") for s in opened))
        assert all(r.done and r.infra_failure and r.infra_failure.source == "connection" for r in results)
        summaries = await client.close([s.episode_id for s in opened])
        assert [s.close_reason for s in summaries] == ["connection_lost"] * 3
        with pytest.raises(PalaestraError) as down:  # no server: the open waits for it until its deadline
            await client.open("echo/text")
        assert down.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    finally:
        await client.aclose()


async def test_steps_queued_behind_an_unwritable_request_end_at_their_deadline() -> None:
    """The stream's writer waits for a connection that never comes (nothing listens): the open it holds
    and the steps queued behind it, not yet requests on the stream, all end at their deadline."""
    with socket.socket() as reserved:  # bound but not listening: every connection is refused
        reserved.bind(("127.0.0.1", 0))
        client = AsyncClient(f"127.0.0.1:{reserved.getsockname()[1]}", timeout_s=0.5)
        try:
            waiting = [client.open("echo/text"), *(client.step(f"episode-{i}", "x") for i in range(3))]
            outcomes = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 60)
        finally:
            await client.aclose()
    assert [getattr(o, "code", o) for o in outcomes] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 4


@pytest.mark.timeout(120)
def test_sync_steps_from_several_threads_each_get_their_own_result(server_address: str) -> None:
    """Client.step hands each call to the loop thread directly; calls from several threads at once
    (which may share a message) each get their own episode's result."""
    mismatches: list[str] = []
    with Client(server_address, timeout_s=60) as client:
        opened = client.open("echo/text", seed=0, options={"turns": 64}, count=4)

        def run(episode_id: str, name: str) -> None:
            for i in range(25):
                try:
                    said = client.step(episode_id, f"{name} {i}").result.observation.messages[0].content
                except Exception as exc:  # a thread's exception would otherwise be lost with it
                    said = repr(exc)
                if said != f"You said: {name} {i}":
                    mismatches.append(said)

        threads = [threading.Thread(target=run, args=(s.episode_id, f"t{n}")) for n, s in enumerate(opened)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert mismatches == []


@pytest.mark.parametrize(("extra", "expected"), [([], False), (["plugin_for_tests"], True)])
def test_trajectories_are_recorded_only_when_a_plugin_listens(extra: list[str], expected: bool) -> None:
    plugins = load_plugins(extra, OTHER_PLUGINS)
    assert Runtime(ServerConfig(port=0), plugins).record_trajectories is expected
