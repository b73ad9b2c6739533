"""Matches between two separate client processes over real gRPC: a draw, an illegal move, a move
timeout, a disconnect, and the barter game's hidden values."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)
DRAW = {"player_1": "1,3,8,4,9", "player_2": "5,2,7,6"}


def player_main(address: str, env_id: str, match_id: str, seat: str, script: str, options: str) -> None:
    """One client process holding one seat. `script`: comma-separated replies; "!exit" leaves after the
    first observation, "!sleep" stops moving. Prints everything it received as JSON lines."""
    from palaestra.agents.client import Client

    replies = script.split(",")
    with Client(address) as client:
        step = client.open(
            env_id, seed=7, options={"match_id": match_id, "seat": seat, **json.loads(options)}
        )[0]
        episode = step.episode_id
        while True:
            result = step.agents[seat]
            text = "\n".join(m.content for m in result.observation.messages)
            print(
                json.dumps(
                    {
                        "agents": sorted(step.agents),
                        "text": text,
                        "info": result.info,
                        "observed": result.observation.info,
                        "components": {c.name: c.value for c in result.components},
                        "done": step.done,
                    }
                ),
                flush=True,
            )
            if step.done:
                return
            reply = replies.pop(0) if replies else "!sleep"
            if reply == "!exit":
                return  # leaving the with-block ends the stream: the server closes this seat's episode
            if reply == "!sleep":
                time.sleep(60)
                return
            if reply.startswith("=="):
                reply = reply[2:]
            elif not reply.startswith(("PROPOSE", "ACCEPT", "What")) and env_id.endswith("-text"):
                reply = f"move: {reply}"
            step = client.step(episode, {seat: reply if env_id.endswith("-text") else int(reply)})


def spawn(
    address: str, env_id: str, match_id: str, seat: str, script: str, **options: Any
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__)), address, env_id, match_id, seat, script, json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outputs(*processes: subprocess.Popen[str]) -> list[list[dict[str, Any]]]:
    seen = []
    for process in processes:
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err
        seen.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    return seen


def test_two_processes_play_a_draw(server_address: str) -> None:
    match = uuid.uuid4().hex
    one = spawn(server_address, "games/tictactoe-text", match, "player_1", DRAW["player_1"])
    two = spawn(server_address, "games/tictactoe-text", match, "player_2", DRAW["player_2"])
    seen_1, seen_2 = outputs(one, two)
    assert seen_1[-1]["info"] == seen_2[-1]["info"] == {"result": "draw", "reason": "rules"}
    assert all(s["agents"] == ["player_1"] for s in seen_1) and all(
        s["agents"] == ["player_2"] for s in seen_2
    )
    assert "played 5" in seen_1[1]["text"] and "played 1" in seen_2[0]["text"]


def test_illegal_moves_are_re_prompted_then_forfeit(server_address: str) -> None:
    match = uuid.uuid4().hex
    # the match's options come from whichever seat opens first, so both pass the same ones
    one = spawn(server_address, "games/tictactoe-text", match, "player_1", "5,1,9", illegal_move_retries=1)
    two = spawn(
        server_address,
        "games/tictactoe-text",
        match,
        "player_2",
        "==I do not know.,5",
        illegal_move_retries=1,
    )
    seen_1, seen_2 = outputs(one, two)
    assert "Illegal move" in seen_2[1]["text"] and seen_2[1]["components"] == {"illegal_move": -1.0}
    assert "'5' is not a legal move" in seen_2[2]["text"]  # 5 is taken: no retries left
    assert seen_2[-1]["info"] == {"result": "loss", "reason": "illegal_move"}
    assert seen_2[-1]["components"] == {"outcome": -1.0, "illegal_move": -1.0}
    assert seen_1[-1]["info"] == {"result": "win", "reason": "illegal_move"}


def test_a_seat_that_runs_out_of_time_forfeits(server_address: str) -> None:
    match = uuid.uuid4().hex
    one = spawn(server_address, "games/connect4", match, "player_0", "3,3", move_timeout_s=1.0)
    two = spawn(server_address, "games/connect4", match, "player_1", "!sleep", move_timeout_s=1.0)
    seen_1 = outputs(one)[0]
    two.kill()
    two.communicate()
    assert seen_1[-1]["info"] == {"result": "win", "reason": "move_timeout"}


def test_a_disconnected_seat_forfeits_after_grace(server_address: str) -> None:
    match = uuid.uuid4().hex
    one = spawn(server_address, "games/connect4", match, "player_0", "3,3,3", disconnect_grace_s=0.5)
    two = spawn(server_address, "games/connect4", match, "player_1", "!exit", disconnect_grace_s=0.5)
    seen_1, seen_2 = outputs(one, two)
    assert len(seen_2) == 1  # it saw its first observation, then left
    assert seen_1[-1]["info"] == {"result": "win", "reason": "disconnect"}


def test_barter_between_processes_keeps_values_private(server_address: str) -> None:
    match = uuid.uuid4().hex
    one = spawn(
        server_address,
        "games/barter-text",
        match,
        "player_1",
        "What do you value most?,PROPOSE: amber=1,ACCEPT",
    )
    two = spawn(
        server_address, "games/barter-text", match, "player_2", "I want silk.,PROPOSE: salt=1 silk=1,ACCEPT"
    )
    seen_1, seen_2 = outputs(one, two)
    values_1, values_2 = seen_1[0]["observed"]["values"], seen_2[0]["observed"]["values"]
    goods = ("amber", "salt", "silk")
    own_1 = ", ".join(f"{g} {int(values_1[g])} each" for g in goods)
    own_2 = ", ".join(f"{g} {int(values_2[g])} each" for g in goods)
    assert own_1 != own_2
    text_1 = json.dumps(seen_1)
    text_2 = json.dumps(seen_2)
    assert own_1 in text_1 and own_2 not in text_1
    assert own_2 in text_2 and own_1 not in text_2
    assert all(s["observed"].get("values", values_1) == values_1 for s in seen_1)
    assert all(s["observed"].get("values", values_2) == values_2 for s in seen_2)
    assert "I want silk." in text_1  # the talk itself does travel
    assert seen_1[-1]["done"] and seen_2[-1]["done"]


if __name__ == "__main__":
    player_main(*sys.argv[1:7])
