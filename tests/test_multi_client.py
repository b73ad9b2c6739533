"""MultiClient over fixed addresses against the real test server (no Ray): an unreachable replica is skipped
for new episodes, not fatal; requests about unknown episodes are NOT_FOUND. The cluster behaviour (placement
by capacity, failures, drain) is in test_cluster.py."""

from __future__ import annotations

import socket

import grpc
import pytest

from palaestra.agents.client import PalaestraError
from palaestra.agents.multi import MultiClient
from palaestra.types import EpisodeStep


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once the socket is closed


@pytest.mark.timeout(60)
def test_an_unreachable_replica_is_skipped_and_unknown_episodes_are_not_found(server_address: str) -> None:
    dead = _closed_port()
    with MultiClient([dead, server_address], timeout_s=20) as client:
        opened = [client.open("echo", seed=i, count=2) for i in range(3)]
        ids = [e.episode_id for group in opened for e in group]
        assert {client.multi.replica_of(i) for i in ids} == {server_address}
        assert dead in client.multi.down_until  # noticed, and avoided for down_s
        steps = client.step_many({i: "hi" for i in ids})
        for step in steps.values():
            assert isinstance(step, EpisodeStep)
            assert step.agents["agent"].observation.messages[-1].content == "You said: hi"
        with pytest.raises(PalaestraError) as caught:
            client.step("no-such-episode", "x")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert len(client.close(ids)) == len(ids)


def test_a_client_needs_addresses_or_a_directory() -> None:
    with pytest.raises(ValueError, match="addresses or a directory"):
        MultiClient()
