"""The command line, run as a user would: `palaestra serve` in a subprocess, other commands against it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from palaestra.agents.client import Client

QUIET = [
    "--disable-plugin",
    "code",
    "--disable-plugin",
    "tools",
    "--disable-plugin",
    "games",
    "--disable-plugin",
    "math",
]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "palaestra", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def served() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "palaestra", "serve", "--port", str(port), *QUIET])
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address) as client:
                    client.list_envs()
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_serve_subprocess_envs_plugins_and_run(served: str) -> None:
    listing = _cli("envs", "--address", served)
    assert listing.returncode == 0 and "gym/CartPole-v1" in listing.stdout
    plugins = _cli("plugins", "--address", served)
    assert plugins.returncode == 0 and "palaestra.v1" in plugins.stdout
    [echo] = [line for line in plugins.stdout.splitlines() if line.startswith("│ echo")]
    assert "loaded" in echo
    run = _cli("run", "echo", "--episodes", "3", "--address", served)
    assert run.returncode == 0
    assert "You said" in run.stdout and "echo results" in run.stdout and "said_word=1" in run.stdout


def test_run_embedded_server_with_random_policy() -> None:
    run = _cli("run", "gym/CartPole-v1", "--episodes", "2", "--transcript", "0", *QUIET)
    assert run.returncode == 0 and "gym/CartPole-v1 results" in run.stdout and "terminated" in run.stdout


def test_version_and_config_errors() -> None:
    assert _cli("--version").stdout.startswith("palaestra 0.1.0")
    bad = _cli("serve", "--port", "99999")
    assert bad.returncode == 2 and "between 0 and 65535" in bad.stdout


def test_no_flag_is_silently_ignored() -> None:
    """--port means nothing to the embedded server, server flags nothing with --address, client flags
    nothing without it: each is refused, saying why."""
    port = _cli("run", "echo", "--port", "50051", *QUIET)
    assert port.returncode == 2 and "--host/--port apply to `palaestra serve`" in port.stdout
    remote = _cli("envs", "--address", "127.0.0.1:1", "--max-episodes", "3")
    assert remote.returncode == 2 and "--max-episodes configure the embedded server" in remote.stdout
    token = _cli("envs", "--token", "x", *QUIET)
    assert token.returncode == 2 and "--token and --tls-ca are for a server at --address" in token.stdout


def test_one_flag_vocabulary() -> None:
    """Every command that talks to a server takes --address, --token and --tls-ca; none takes --server."""
    for command in (["envs"], ["plugins"], ["run", "echo"], ["train", "grpo", "--env", "echo"]):
        helped = _cli(*command, "--help")
        assert helped.returncode == 0, command
        for flag in ("--address", "--token", "--tls-ca"):
            assert flag in helped.stdout, (command, flag)
        assert "--server" not in helped.stdout, command
    train = _cli("train", "ppo", "--env", "gym/CartPole-v1", "--token", "x")
    assert train.returncode != 0 and "--token and --tls-ca are for a server at --address" in train.stderr


def test_games_tournament_and_leaderboard(tmp_path: Path) -> None:
    results = str(tmp_path / "results.jsonl")
    played = _cli(
        "games",
        "tournament",
        "games/tictactoe",
        "--player",
        "perfect=minimax",
        "--player",
        "coin=random",
        "--rounds",
        "2",
        "--results",
        results,
    )
    assert played.returncode == 0, played.stderr
    board = _cli("games", "leaderboard", "--results", results)
    lines = [line for line in board.stdout.splitlines() if line.strip()]
    assert lines[1].split()[1] == "perfect", "a perfect tic-tac-toe player never loses to a random one"


def test_run_shows_the_board_of_a_game() -> None:
    run = _cli(
        "run", "games/tictactoe", "--episodes", "1", "--disable-plugin", "code", "--disable-plugin", "tools"
    )
    assert run.returncode == 0 and "player_1 sees" in run.stdout and "games/tictactoe results" in run.stdout
