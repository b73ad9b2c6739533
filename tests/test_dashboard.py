"""The dashboard's HTTP side against a real server: the token, the JSON endpoints, playing through the
play endpoints (a real gRPC episode of the logged-in principal), and bad input."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from palaestra.agents.client import Client
from palaestra.server.app import ServerThread
from palaestra.server.config import PrincipalConfig

pytestmark = pytest.mark.timeout(120)

TOKEN = "dash-token"


def _start(
    start_server: Callable[..., ServerThread], tmp_path: Path, **config: Any
) -> tuple[ServerThread, str]:
    server = start_server(
        store={"path": str(tmp_path / "d.sqlite"), "flush_interval_s": 0.05},
        dashboard={"enabled": True, "port": 0},
        **config,
    )
    assert server.server is not None and server.server.extras.dashboard is not None
    return server, server.server.extras.dashboard.url


@pytest.fixture
def dashboard(start_server: Callable[..., ServerThread], tmp_path: Path) -> tuple[ServerThread, str]:
    return _start(start_server, tmp_path, auth_token=TOKEN)


def _flush(server: ServerThread) -> None:
    assert server.server is not None and server.server.extras.recorder is not None
    assert server.server.extras.recorder.flush()


def test_the_token_guards_everything_but_the_login(dashboard: tuple[ServerThread, str]) -> None:
    _, url = dashboard
    with httpx.Client(base_url=url) as http:
        assert http.get("/api/catalog").status_code == 401
        assert "log in" in http.get("/api/catalog").json()["error"]
        page = http.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        assert http.get("/login").status_code == 200
        wrong = http.post("/login", data={"token": "nope"})
        assert wrong.status_code == 401 and "not accepted" in wrong.text
        assert http.get("/api/catalog", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert http.get("/api/catalog", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
        login = http.post("/login", data={"token": TOKEN})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        assert http.get("/").status_code == 200  # the session cookie now
        info = http.get("/api/info").json()
        assert info["principal"] == "default" and info["auth"] and info["store"]
        assert http.get("/logout").status_code == 303
        assert http.get("/api/info").status_code == 401


def test_read_endpoints(dashboard: tuple[ServerThread, str]) -> None:
    server, url = dashboard
    with Client(server.address, token=TOKEN) as client:
        [open_one] = client.open("echo", seed=1)
        done = client.open("echo", seed=2)[0]
        client.step(done.episode_id, "hello")
        client.close(done.episode_id)
        _flush(server)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            catalog = {e["id"]: e for e in http.get("/api/catalog").json()}
            assert "games/tictactoe-text" in catalog and "tools/shop" in catalog
            assert catalog["echo"]["recorded"]["episodes"] == 1
            assert catalog["tools/shop"]["action_space"]["kind"] == "chat"
            live = http.get("/api/live").json()
            assert [e["episode_id"] for e in live] == [open_one.episode_id]
            assert live[0]["env_id"] == "echo" and live[0]["steps"] == 0 and live[0]["principal"] == "default"
            [recorded] = http.get("/api/episodes", params={"env_id": "echo"}).json()
            assert recorded["episode_id"] == done.episode_id and "trajectory" not in recorded
            episode = http.get(f"/api/episodes/{done.episode_id}").json()
            assert episode["trajectory"][1]["actions"] == {"agent": "hello"}
            assert http.get("/api/episodes/nope").status_code == 404
            curves = http.get("/api/curves").json()
            assert [c["env_id"] for c in curves] == ["echo"]
            assert len(http.get("/api/curves", params={"env_id": "echo"}).json()) == 1
            sandboxes = http.get("/api/sandboxes").json()
            assert sandboxes["available"] and set(sandboxes["profiles"]) >= {"python"}
            assert http.get("/api/episodes", params={"limit": "x"}).status_code == 400
            assert http.get("/api/nothing").status_code == 404
            assert http.get("/static/../app.py").status_code == 404
            assert http.get("/static/app.js").headers["content-type"].startswith("text/javascript")


def _play(
    http: httpx.Client, env_id: str, options: dict[str, Any], choose: Callable[[dict[str, Any]], Any]
) -> Any:
    opened = http.post("/api/play/open", json={"env_id": env_id, "seed": 5, "options": options})
    assert opened.status_code == 200, opened.text
    step = opened.json()["step"]
    episode_id = step["episode_id"]
    while not step["done"]:
        [result] = step["agents"].values()
        reply = http.post("/api/play/step", json={"episode_id": episode_id, "action": choose(result)})
        assert reply.status_code == 200, reply.text
        step = reply.json()["step"]
    closed = http.post("/api/play/close", json={"episode_id": episode_id}).json()
    return episode_id, step, closed["summary"]


def test_playing_a_game_is_recorded_and_rated(dashboard: tuple[ServerThread, str]) -> None:
    server, url = dashboard
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        options = {"opponent": "minimax", "seat": "player_1"}
        episode_id, last, summary = _play(
            http, "games/tictactoe-text", options, lambda result: {"text": result["legal_actions"][0]}
        )
        [agent] = summary["agents"]
        assert agent["agent"] == "player_1" and agent["return"] in (-1.0, 0.0)  # minimax never loses
        assert any(c["name"] == "outcome" for c in last["agents"]["player_1"]["components"])
        _flush(server)
        episode = http.get(f"/api/episodes/{episode_id}").json()
        assert episode["principal"] == "default" and episode["options"]["opponent"] == "minimax"
        assert episode["runs"][0]["kind"] == "play" and episode["runs"][0]["model"] == "human"
        [board] = http.get("/api/leaderboards").json()
        assert board["env_id"] == "games/tictactoe-text" and board["games"] == 1
        names = {row["name"]: row for row in board["rows"]}
        assert set(names) == {"human (default)", "bot:minimax"}
        assert names["bot:minimax"]["ordinal"] >= names["human (default)"]["ordinal"]


def test_a_match_between_two_principals_is_rated(
    start_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """Two clients with their own tokens play one tic-tac-toe match (each its own seat's episode); the
    store joins the seats by match_id and the leaderboard rates the principals against each other."""
    principals = {"alice": PrincipalConfig(token="alice-token"), "bob": PrincipalConfig(token="bob-token")}
    server, url = _start(start_server, tmp_path, principals=principals)
    outcomes: dict[str, float] = {}

    def play(name: str, seat: str) -> None:
        with Client(server.address, token=f"{name}-token") as client:
            options = {"match_id": "m1", "seat": seat}
            [step] = client.open("games/tictactoe-text", seed=1, options=options)
            while not step.done:
                step = client.step(step.episode_id, step.result.observation.legal_actions[0])
            [summary] = client.close(step.episode_id)
            outcomes[name] = summary.agents[0].episode_return

    players = [threading.Thread(target=play, args=a) for a in (("alice", "player_1"), ("bob", "player_2"))]
    for player in players:
        player.start()
    for player in players:
        player.join(60)
    assert sorted(outcomes) == ["alice", "bob"] and outcomes["alice"] == -outcomes["bob"]
    _flush(server)
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer bob-token"}) as http:
        [board] = http.get("/api/leaderboards").json()
        rows = {row["name"]: row for row in board["rows"]}
        assert set(rows) == {"alice", "bob"} and board["games"] == 1
        winner = max(outcomes, key=lambda n: outcomes[n])
        if outcomes[winner] > 0:
            assert rows[winner]["wins"] == 1 and rows[winner]["ordinal"] > min(
                r["ordinal"] for r in rows.values()
            )
        else:
            assert all(row["draws"] == 1 for row in rows.values())


def test_a_tensor_game_is_played_by_index_and_drawn(dashboard: tuple[ServerThread, str]) -> None:
    _, url = dashboard
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        opened = http.post(
            "/api/play/open", json={"env_id": "games/tictactoe", "options": {"opponent": "random"}}
        )
        assert opened.status_code == 200, opened.text
        [result] = opened.json()["step"]["agents"].values()
        assert result["legal_indices"] == list(range(9))
        assert result["rendered"]  # the plugin draws the board
        episode_id = opened.json()["step"]["episode_id"]
        step = http.post("/api/play/step", json={"episode_id": episode_id, "action": {"discrete": 4}}).json()[
            "step"
        ]
        [after] = step["agents"].values()
        assert 4 not in after["legal_indices"]


def test_a_classic_environment_shows_its_observation(dashboard: tuple[ServerThread, str]) -> None:
    _, url = dashboard
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        opened = http.post("/api/play/open", json={"env_id": "gym/CartPole-v1", "seed": 1}).json()
        assert opened["spec"]["action_space"] == {"kind": "discrete", "n": 2, "start": 0}
        [result] = opened["step"]["agents"].values()
        assert result["tensor"]["shape"] == [4] and len(result["tensor"]["values"]) == 4
        step = http.post(
            "/api/play/step", json={"episode_id": opened["step"]["episode_id"], "action": {"discrete": 1}}
        ).json()["step"]
        [after] = step["agents"].values()
        assert after["reward"] == 1.0 and after["tensor"]["values"] != result["tensor"]["values"]


def test_bad_play_input_is_a_clear_client_error(dashboard: tuple[ServerThread, str]) -> None:
    _, url = dashboard
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        unknown = http.post("/api/play/open", json={"env_id": "no/such-env"})
        assert unknown.status_code == 404 and "no/such-env" in unknown.json()["error"]
        assert http.post("/api/play/open", json={"env_id": "echo", "seed": "x"}).status_code == 400
        assert (
            http.post(
                "/api/play/open", content=b"{not json", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        opened = http.post(
            "/api/play/open", json={"env_id": "games/tictactoe", "options": {"opponent": "random"}}
        )
        episode_id = opened.json()["step"]["episode_id"]
        bad = http.post("/api/play/step", json={"episode_id": episode_id, "action": {"discrete": 42}})
        assert bad.status_code == 400 and "42" in bad.json()["error"]
        malformed = http.post("/api/play/step", json={"episode_id": episode_id, "action": {"move": 1}})
        assert malformed.status_code == 400 and "action must be one of" in malformed.json()["error"]
        assert (
            http.post("/api/play/step", json={"episode_id": "other", "action": {"discrete": 1}}).status_code
            == 404
        )
        assert http.get("/api/play/open").status_code == 405


def test_episodes_played_by_another_login_are_not_yours(
    start_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    server = start_server(
        auth_token=TOKEN, dashboard={"enabled": True, "port": 0}
    )  # no store: play still works
    assert server.server is not None
    url = server.server.extras.dashboard.url
    with httpx.Client(base_url=url) as alice, httpx.Client(base_url=url) as bob:
        for http in (alice, bob):
            assert http.post("/login", data={"token": TOKEN}).status_code == 303
        opened = alice.post("/api/play/open", json={"env_id": "echo"}).json()
        episode_id = opened["step"]["episode_id"]
        # the same token, another session: the play page's episodes belong to the token's client
        assert (
            bob.post("/api/play/step", json={"episode_id": episode_id, "action": {"text": "x"}}).status_code
            == 200
        )
        assert alice.get("/api/episodes").status_code == 404  # no store on this server: says so
        assert "no trajectory store" in alice.get("/api/episodes").json()["error"]


def test_without_a_token_the_dashboard_is_open(
    start_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    _, url = _start(start_server, tmp_path)
    with httpx.Client(base_url=url) as http:
        assert http.get("/").status_code == 200
        assert http.get("/api/info").json()["principal"] == "anonymous"


def test_the_http_server_refuses_malformed_requests(dashboard: tuple[ServerThread, str]) -> None:
    _, url = dashboard
    host, port = url.removeprefix("http://").split(":")

    def raw(data: bytes) -> bytes:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(data)
            chunks = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)

    assert raw(b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"POST /login HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").startswith(b"HTTP/1.1 413")
    assert raw(b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431")
