"""TLS and a token on every entry point: `palaestra serve --tls-cert --tls-key`, the CLI's `--tls-ca`,
and the Gymnasium and PettingZoo wrappers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from palaestra.agents.client import Client, PalaestraError
from palaestra.agents.gym import RemoteEnv

TOKEN = "tls-and-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tls_certificate: tuple[Path, Path]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    cert, key = tls_certificate
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "palaestra", "serve", "--host", "localhost", "--port", str(port),
         "--tls-cert", str(cert), "--tls-key", str(key), "--auth-token", TOKEN, "--no-store", "--grace", "30",
         "--disable-plugin", "code", "--disable-plugin", "math", "--disable-plugin", "tools"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    address = f"localhost:{port}"
    credentials = grpc.ssl_channel_credentials(cert.read_bytes())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with grpc.secure_channel(address, credentials) as channel:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            break
        except grpc.RpcError:
            time.sleep(0.2)
    yield address, process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_cli_serves_tls_and_connects_with_tls_ca(
    served: tuple[str, subprocess.Popen[str]], tls_certificate: tuple[Path, Path]
) -> None:
    address, _ = served
    cert, _ = tls_certificate
    command = [sys.executable, "-m", "palaestra", "envs", "--address", address, "--tls-ca", str(cert)]
    listing = subprocess.run([*command, "--token", TOKEN], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "echo" in listing.stdout
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stdout + refused.stderr


def test_wrappers_take_a_token_and_a_ca(
    served: tuple[str, subprocess.Popen[str]], tls_certificate: tuple[Path, Path]
) -> None:
    address, _ = served
    cert, _ = tls_certificate
    env = RemoteEnv(address, "gym/CartPole-v1", token=TOKEN, tls_root_cert=cert)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4,)
    env.close()
    pettingzoo = pytest.importorskip("palaestra.agents.pettingzoo")
    games = pettingzoo.RemoteParallelEnv(address, "games/rps", token=TOKEN, tls_root_cert=cert)
    observations, _ = games.reset(seed=0)
    assert set(observations) == set(games.possible_agents)
    games.close()
    with Client(address, tls_root_cert=cert) as anonymous, pytest.raises(PalaestraError) as refused:
        anonymous.list_envs()
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED


def test_sigterm_drains_and_exits(served: tuple[str, subprocess.Popen[str]]) -> None:
    _, process = served
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert "Traceback" not in (process.stderr.read() if process.stderr else "")
