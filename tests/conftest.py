"""Shared fixtures: real servers over real gRPC.

`server_address` is one in-process server (its own thread and event loop) with every plugin installed
through entry points, shared by the whole test session. `start_server` starts extra servers with their
own configuration (auth, limits, selected plugins) and stops them after the test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
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


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for `localhost` and its key: (cert.pem, key.pem)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
