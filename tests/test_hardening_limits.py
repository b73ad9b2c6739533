"""Message limits answered in-band, undecodable messages that spare the stream, Box actions checked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import numpy as np
import pytest

from palaestra import types as t
from palaestra.agents.client import Client, PalaestraError
from palaestra.server.app import ServerThread
from palaestra.v1 import env_pb2

StartServer = Callable[..., ServerThread]
ONLY_ECHO = ["code", "math", "games", "tools"]
MIB = 1024 * 1024


def test_limits_are_advertised_and_large_requests_answer_in_band(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(disabled_plugins=ONLY_ECHO, max_message_mb=1)
    with Client(server.address, max_message_mb=4, timeout_s=30) as client:
        info = client.server_info()
        assert (info.max_message_bytes, info.max_request_bytes) == (MIB, MIB * 15 // 16)
        [episode] = client.open("echo/text")
        with pytest.raises(PalaestraError) as refused:  # above the application limit: in-band
            client.step(episode.episode_id, "x" * (MIB * 15 // 16 + 100))
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "above the server's limit" in refused.value.message
        step = client.step(episode.episode_id, "still here")  # the stream and the episode go on
        assert step.result.observation.messages[0].content == "You said: still here"
        # Above the transport limit the stream ends: its episodes are lost (infrastructure), and a new
        # stream serves new ones. The server logs one line for it, without a traceback.
        lost = client.step(episode.episode_id, "x" * (MIB + 100))
        assert lost.infra_failure is not None and "RESOURCE_EXHAUSTED" in lost.infra_failure.message
        assert client.open("echo/text")
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("palaestra")]
    with Client(server.address, timeout_s=30) as careful, pytest.raises(PalaestraError) as local:
        [episode] = careful.open("echo/text")
        careful.step(episode.episode_id, "x" * (64 * MIB))  # refused by the client before sending
    assert local.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_an_undecodable_message_is_refused_in_band(start_server: StartServer) -> None:
    server = start_server(disabled_plugins=ONLY_ECHO)
    async with grpc.aio.insecure_channel(server.address) as channel:
        session = channel.stream_stream(
            "/palaestra.v1.EnvService/Session",
            request_serializer=lambda raw: raw,
            response_deserializer=env_pb2.SessionResponse.FromString,
        )
        good = env_pb2.SessionRequest(request_id="2", open=env_pb2.OpenRequest(env_id="echo/text"))
        garbage = b"\x0a\x01" + b"1" + b"\xff\xff\xff\xff"  # request id "1", then no valid field
        call = session()
        await call.write(garbage)
        refused = await asyncio.wait_for(call.read(), 10)
        assert refused.request_id == "1" and refused.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        await call.write(good.SerializeToString())
        opened = await asyncio.wait_for(call.read(), 10)
        assert opened.request_id == "2" and len(opened.open.episodes) == 1
        await call.done_writing()


def test_box_actions_are_checked_like_gymnasium_contains(start_server: StartServer) -> None:
    server = start_server(disabled_plugins=ONLY_ECHO)
    with Client(server.address) as client:
        [pendulum] = client.open("gym/Pendulum-v1", seed=0)  # Box([-2], [2], float32)
        for bad in (
            np.array([1], dtype=np.int64),  # int64 does not cast safely to float32
            np.array([1.0], dtype=np.float64),
            np.array([2.5], dtype=np.float32),  # above high
            np.array([-3.0], dtype=np.float32),  # below low
        ):
            with pytest.raises(PalaestraError) as refused:
                client.step(pendulum.episode_id, t.Action(tensor=bad))
            assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
        ok = client.step(pendulum.episode_id, t.Action(tensor=np.array([1.5], dtype=np.float32)))
        assert ok.infra_failure is None and ok.step_index == 1
