"""Shared fixtures: real servers over real gRPC.

`server_address` is one in-process server (its own thread and event loop) with every plugin installed
through entry points, shared by the whole test session. `start_server` starts extra servers with their
own configuration (auth, limits, selected plugins) and stops them after the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from palaestra.agents.client import Client
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig

IN_CI = os.environ.get("CI") == "true"
# Strict plugins in the tests (and CI): a plugin that fails to import or register fails the run.
os.environ.setdefault("PALAESTRA_STRICT_PLUGINS", "1")


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    with ServerThread(ServerConfig(port=0, idle_timeout_s=600)) as thread:
        yield thread


@pytest.fixture(scope="session")
def server_address(server: ServerThread) -> str:
    return server.address


@pytest.fixture
def client(server_address: str) -> Iterator[Client]:
    with Client(server_address) as c:
        yield c


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(**config: Any) -> ServerThread:
        thread = ServerThread(ServerConfig(port=0, **config)).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()
