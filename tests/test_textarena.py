"""The TextArena plugin through a real server: a single-player game won by a scripted player, a two-client
match (each client holds one seat, sees only its own results), self-play, a tournament rated with
OpenSkill, and the games the installed textarena cannot build answering FAILED_PRECONDITION."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator

import grpc
import nltk
import pytest

from palaestra.agents.client import Client, PalaestraError
from palaestra.plugins import textarena as textarena_plugin
from palaestra.plugins.games.tournament import run_tournament
from palaestra.plugins.textarena import textarena_game
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig
from palaestra.testing import ComplianceSuite
from palaestra.types import Action, AgentResult, EnvKind, EpisodeStep

TICTACTOE = "ta/TicTacToe-v0"


@pytest.fixture(scope="module")
def ta_server() -> Iterator[ServerThread]:
    config = ServerConfig(port=0, disabled_plugins=["code", "math", "tools", "sandboxes", "reasoning_gym"])
    with ServerThread(config) as server:
        yield server


@pytest.fixture
def ta_client(ta_server: ServerThread) -> Iterator[Client]:
    with Client(ta_server.address) as client:
        yield client


def _text(step: EpisodeStep, seat: str) -> str:
    return "\n".join(m.content for m in step.agents[seat].observation.messages)


def test_single_player_game_is_won_by_binary_search(ta_client: Client) -> None:
    spec = ta_client.describe("ta/GuessTheNumber-v0")
    assert spec.kind is EnvKind.SINGLE_AGENT and spec.agents == ("player_0",)
    [step] = ta_client.open("ta/GuessTheNumber-v0", seed=4)
    low, high = map(int, re.findall(r"between (\d+) and (\d+)", _text(step, "player_0"))[0])
    guesses = 0
    while not step.done:
        guess = (low + high) // 2
        step = ta_client.step(step.episode_id, Action(text=f"I guess [{guess}]"))
        guesses += 1
        news = _text(step, "player_0").lower()
        if "higher" in news:
            low = guess + 1
        elif "lower" in news:
            high = guess - 1
    outcome = {c.name: c.value for c in step.result.components}["outcome"]
    assert outcome > 0 and step.result.terminated and guesses <= 5  # 1..20: five halvings at most


def test_a_policy_that_never_moves_loses_by_the_games_rules(ta_client: Client) -> None:
    [step] = ta_client.open("ta/GuessTheNumber-v0", seed=4)
    while not step.done:
        step = ta_client.step(step.episode_id, Action(text="I do not know."))
    assert {c.name: c.value for c in step.result.components}["outcome"] <= 0


def _first_move(text: str) -> str:
    return re.findall(r"'(\[\d+\])'", text.split("Available Moves:")[-1])[0]


def test_two_clients_play_one_match(ta_server: ServerThread) -> None:
    finals: dict[str, EpisodeStep] = {}
    seen: dict[str, set[str]] = {}

    def play(seat: str) -> None:
        with Client(ta_server.address) as client:
            [step] = client.open(TICTACTOE, seed=2, options={"match_id": "ta-m1", "seat": seat})
            seen[seat] = set(step.agents)
            while not step.done:
                step = client.step(step.episode_id, {seat: Action(text=_first_move(_text(step, seat)))})
                seen[seat] |= set(step.agents)
            finals[seat] = step

    threads = [threading.Thread(target=play, args=(seat,)) for seat in ("player_0", "player_1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert seen == {"player_0": {"player_0"}, "player_1": {"player_1"}}  # each sees only its own seat
    outcomes = {
        seat: {c.name: c.value for c in step.agents[seat].components}["outcome"]
        for seat, step in finals.items()
    }
    # both take the lowest free cell: player_0 gets 0, 2, 4, 6 and wins on the diagonal 2-4-6
    assert outcomes == {"player_0": 1.0, "player_1": -1.0}


def test_three_clients_play_one_three_player_match(ta_server: ServerThread) -> None:
    """`ta/<game>/<N>p`: a game at another player count it accepts, one client per seat."""
    seats = ("player_0", "player_1", "player_2")
    finals: dict[str, EpisodeStep] = {}
    seen: dict[str, set[str]] = {}

    def play(seat: str) -> None:
        with Client(ta_server.address) as client:
            options = {"match_id": "ta-liars-3", "seat": seat}
            [step] = client.open("ta/LiarsDice-v0/3p", seed=1, options=options)
            seen[seat], moves = set(step.agents), 0
            while not step.done:  # bid high, then call, in turn: dice are lost until one player is left
                move = "[Call]" if moves % 2 else "[Bid: 9, 6]"
                step = client.step(step.episode_id, {seat: Action(text=move)})
                seen[seat], moves = seen[seat] | set(step.agents), moves + 1
            finals[seat] = step

    threads = [threading.Thread(target=play, args=(seat,)) for seat in seats]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert seen == {seat: {seat} for seat in seats}  # each client sees only its own seat
    outcomes = sorted(
        {c.name: c.value for c in finals[seat].agents[seat].components}["outcome"] for seat in seats
    )
    assert outcomes[-1] == 1.0 and outcomes[0] < 1.0  # one winner, the others did worse


def test_player_counts_a_game_does_not_accept_are_not_found(ta_client: Client) -> None:
    assert ta_client.describe("ta/Poker-v0/4p").agents == tuple(f"player_{i}" for i in range(4))
    assert "ta/Poker-v0/<N>p" in ta_client.describe("ta/Poker-v0").description
    with pytest.raises(PalaestraError) as refused:
        ta_client.describe("ta/TicTacToe-v0/3p")
    assert refused.value.code == grpc.StatusCode.NOT_FOUND and "it accepts 2" in str(refused.value)


def test_self_play_moves_every_seat(ta_client: Client) -> None:
    [step] = ta_client.open(TICTACTOE, seed=0)
    moves = 0
    while not step.done:
        seat = step.next_agent
        step = ta_client.step(step.episode_id, {seat: Action(text=_first_move(_text(step, seat)))})
        moves += 1
    assert moves == 7 and {c.name: c.value for c in step.agents["player_0"].components}["outcome"] == 1.0


def test_tournament_rates_textarena_players_with_openskill() -> None:
    def lowest(seat: str, news: AgentResult) -> Action:
        return Action(text=_first_move("\n".join(m.content for m in news.observation.messages)))

    def highest(seat: str, news: AgentResult) -> Action:
        moves = re.findall(r"'(\[\d+\])'", "\n".join(m.content for m in news.observation.messages))
        return Action(text=moves[-1])

    def silent(seat: str, news: AgentResult) -> Action:
        return Action(text="pass")

    board = run_tournament(
        TICTACTOE,
        {"lowest": lowest, "highest": highest, "silent": silent},
        rounds=2,
        game=textarena_game(TICTACTOE),
    )
    ranking = [row["name"] for row in board]
    assert ranking[-1] == "silent", board  # never makes a legal move: TextArena forfeits it every game
    assert {row["games"] for row in board} == {8}


def test_unbuildable_games_are_failed_precondition(ta_client: Client) -> None:
    if sys.version_info < (3, 12):  # textarena 0.7.4's Chess uses Python 3.12 f-strings
        with pytest.raises(PalaestraError) as caught:
            ta_client.open("ta/Chess-v0")
        assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "SyntaxError" in caught.value.message
        tries = textarena_plugin._probe.cache_info().misses
        with pytest.raises(PalaestraError, match="SyntaxError"):  # the same answer, without building it again
            ta_client.open("ta/Chess-v0")
        assert textarena_plugin._probe.cache_info().misses == tries
    try:  # Wordle needs NLTK's words corpus; the server never downloads it
        nltk.data.find("corpora/words")
    except LookupError:
        with pytest.raises(PalaestraError) as caught:
            ta_client.open("ta/Wordle-v0")
        assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "python -m nltk.downloader words" in caught.value.message
    else:
        [step] = ta_client.open("ta/Wordle-v0", seed=0)
        assert step.infra_failure is None


def test_unknown_game_is_not_found(ta_client: Client) -> None:
    with pytest.raises(PalaestraError) as caught:
        ta_client.open("ta/NoSuchGame-v0")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND


class TestTextArenaComplies(ComplianceSuite):
    """The shipped compliance suite over TextArena games of every shape: single-player, two-player, a
    three-player free-for-all whose players can all be eliminated (TextArena would loop forever), and
    a game with a quadratic move parser (the reply cap keeps it fast)."""

    env_ids = [
        "ta/GuessTheNumber-v0",
        "ta/Minesweeper-v0",
        "ta/TicTacToe-v0",
        "ta/ConnectFour-v0-large",
        "ta/KuhnPoker-v0",
        "ta/MarketEntryGame-v0",
        "ta/SecretMafia-v0",
    ]
    server_config = {"disabled_plugins": ["code", "math", "tools", "sandboxes", "reasoning_gym"]}
