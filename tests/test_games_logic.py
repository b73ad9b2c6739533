"""The games plugin at the Python level: engines, text forms, the illegal-move policy, bots, the barter
game's hidden information, single-agent views and tournaments."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from palaestra.env import EnvContext, InvalidAction
from palaestra.plugins.games.barter import GOODS, BarterReferee, scripted_trader, worth
from palaestra.plugins.games.envs import build_env
from palaestra.plugins.games.referee import ILLEGAL_MOVE, OUTCOME, TEXT_POLICY, MovePolicy
from palaestra.plugins.games.reference import render_text, scripted_policy
from palaestra.plugins.games.tournament import game_def, leaderboard, play_game, run_tournament
from palaestra.types import Action, RewardKind, StepResult


def make(env_id: str, **options: object):  # type: ignore[no-untyped-def]
    return build_env(game_def(env_id), EnvContext(env_id, "episode", options=options))


def play_out(env_id: str, seed: int, **options: object) -> StepResult:
    env = make(env_id, **options)
    result = env.reset(seed=seed)
    policy = scripted_policy(env_id, seed)
    while not result.done:
        if result.next_agent:
            result = env.step(
                {result.next_agent: policy(result.next_agent, result.agents[result.next_agent])}
            )
        else:  # simultaneous: one seat at a time, the round is played when all have moved
            for seat, news in list(result.agents.items()):
                step = env.step({seat: policy(seat, news)})
            result = step
    return result


@pytest.mark.parametrize(
    "env_id",
    [
        "games/tictactoe",
        "games/tictactoe-text",
        "games/connect4",
        "games/connect4-text",
        "games/chess-text",
        "games/rps",
    ],
)
def test_every_game_plays_to_the_end_with_an_outcome_for_each_seat(env_id: str) -> None:
    final = play_out(env_id, seed=1)
    spec = game_def(env_id).spec
    assert set(final.agents) == set(spec.agents)
    outcomes = {seat: r.scalar_reward for seat, r in final.agents.items()}
    assert all(r.done for r in final.agents.values())
    if env_id != "games/rps":  # board games are zero-sum, +1 / -1 / 0
        assert sum(outcomes.values()) == 0 and set(outcomes.values()) <= {-1.0, 0.0, 1.0}
    assert {r.info["result"] for r in final.agents.values()} <= {"win", "loss", "draw"}


def test_same_seed_same_game() -> None:
    assert render_text(play_out("games/connect4-text", 5).agents["player_0"].observation) == render_text(
        play_out("games/connect4-text", 5).agents["player_0"].observation
    )


def test_tictactoe_text_cells_are_in_reading_order() -> None:
    env = make("games/tictactoe-text")
    first = env.reset(seed=0)
    prompt = first.agents["player_1"].observation
    assert prompt.messages[0].role == "system" and "tic-tac-toe" in prompt.messages[0].content
    assert prompt.legal_actions == [str(i) for i in range(1, 10)]
    after = env.step({"player_1": Action(text="I'll take the top right corner. move: 3")})
    board = after.agents["player_2"].observation.messages[-1].content
    assert " 1 | 2 | X" in board.splitlines()
    assert "player_1 (X) played 3." in board
    assert "3" not in after.agents["player_2"].observation.legal_actions


def test_connect4_text_pieces_drop_to_the_bottom() -> None:
    env = make("games/connect4-text")
    env.reset(seed=0)
    result = env.step({"player_0": Action(text="move: 4")})
    lines = result.agents["player_1"].observation.messages[-1].content.splitlines()
    rows = lines[lines.index("1 2 3 4 5 6 7") - 6 : lines.index("1 2 3 4 5 6 7")]
    assert rows[5] == ". . . X . . ." and rows[0] == ". . . . . . ."


def test_chess_text_accepts_uci_and_san() -> None:
    env = make("games/chess-text")
    first = env.reset(seed=0)
    assert "e2e4" in first.agents["player_0"].observation.legal_actions
    after = env.step({"player_0": Action(text="move: e2e4")})
    assert "played e2e4" in after.agents["player_1"].observation.messages[-1].content
    after = env.step({"player_1": Action(text="I answer with the knight: Nf6")})
    assert "played g8f6" in after.agents["player_0"].observation.messages[-1].content


def test_unparsable_text_move_is_re_prompted_then_forfeited() -> None:
    env = make("games/tictactoe-text", illegal_move_retries=2)
    env.reset(seed=0)
    for attempt in (1, 2):
        result = env.step({"player_1": Action(text="I do not know.")})
        news = result.agents["player_1"]
        assert result.next_agent == "player_1" and not news.done
        assert "Illegal move" in news.observation.messages[-1].content
        assert news.observation.legal_actions  # the re-prompt lists the legal moves again
        (penalty,) = news.components
        assert (penalty.name, penalty.kind, penalty.value) == (ILLEGAL_MOVE, RewardKind.PENALTY, -1.0)
        assert news.info["retries_left"] == 3 - attempt
    final = env.step({"player_1": Action(text="move: 42")})
    assert final.done and final.agents["player_1"].info == {"result": "loss", "reason": ILLEGAL_MOVE}
    loser = {c.name: c.value for c in final.agents["player_1"].components}
    assert loser == {OUTCOME: -1.0, ILLEGAL_MOVE: -1.0}
    assert final.agents["player_2"].scalar_reward == 1.0


def test_masked_out_tensor_action_forfeits_or_is_rejected() -> None:
    env = make("games/tictactoe")
    env.reset(seed=0)
    env.step({"player_1": Action(discrete=4)})
    final = env.step({"player_2": Action(discrete=4)})  # occupied
    assert final.done and final.agents["player_2"].info["reason"] == ILLEGAL_MOVE
    strict = make("games/tictactoe", illegal_move="reject")
    strict.reset(seed=0)
    strict.step({"player_1": Action(discrete=4)})
    with pytest.raises(InvalidAction, match="masked out"):
        strict.step({"player_2": Action(discrete=4)})


def test_moving_out_of_turn_is_refused() -> None:
    env = make("games/tictactoe")
    env.reset(seed=0)
    with pytest.raises(InvalidAction, match="waiting for player_1"):
        env.step({"player_2": Action(discrete=0)})


def test_minimax_is_perfect_and_search_beats_random() -> None:
    ttt, c4 = game_def("games/tictactoe"), game_def("games/connect4")
    for seed in range(4):
        outcome, _ = play_game(ttt, {"player_1": "minimax", "player_2": "minimax"}, seed)
        assert outcome == {"player_1": 0.0, "player_2": 0.0}  # perfect play draws
        outcome, _ = play_game(ttt, {"player_1": "random", "player_2": "minimax"}, seed)
        assert outcome["player_2"] >= 0
    wins = sum(
        play_game(c4, {"player_0": "minimax", "player_1": "random"}, s)[0]["player_0"] > 0 for s in range(6)
    )
    assert wins == 6


def test_single_agent_view_against_a_bot_shows_only_the_learner() -> None:
    env = make("games/connect4", opponent="minimax", seat="player_1")
    result = env.reset(seed=3)
    assert set(result.agents) == {"player_1"} and result.next_agent == "player_1"
    assert int(result.agents["player_1"].observation.tensor[:, :, 1].sum()) == 1  # the bot opened
    with pytest.raises(InvalidAction, match="no opponent"):
        make("games/connect4", opponent="stockfish")


def test_text_view_against_a_bot_reports_the_bots_move() -> None:
    env = make("games/tictactoe-text", opponent="minimax", seat="player_2")
    first = env.reset(seed=0)
    text = first.agents["player_2"].observation.messages[-1].content
    assert "player_1 (X) played" in text and first.agents["player_2"].observation.legal_actions


# ---------------------------------------------------------------- barter: hidden information


def _barter_transcripts(seed: int) -> tuple[BarterReferee, dict[str, str]]:
    referee = BarterReferee(TEXT_POLICY, max_turns=8)
    update = referee.start(seed)
    seen = {s: "" for s in referee.agents}
    rng = random.Random(seed)
    while True:
        for seat, news in update.results.items():
            seen[seat] += json.dumps(news.observation.info) + "".join(
                m.content for m in news.observation.messages
            )
        if update.over:
            return referee, seen
        update = referee.bot_act(update.to_act[0], scripted_trader, rng)


def test_barter_seats_never_see_each_others_values() -> None:
    for seed in range(6):
        referee, seen = _barter_transcripts(seed)
        for seat, other in (("player_1", "player_2"), ("player_2", "player_1")):
            own = ", ".join(f"{g} {referee.values[seat][g]} each" for g in GOODS)
            theirs = ", ".join(f"{g} {referee.values[other][g]} each" for g in GOODS)
            assert own in seen[seat]
            assert theirs not in seen[seat]
            assert json.dumps(referee.values[other]) not in seen[seat]


def test_barter_deal_pays_each_trader_its_own_value() -> None:
    referee = BarterReferee(TEXT_POLICY, max_turns=8)
    referee.start(11)
    keep = {g: referee.counts[g] for g in GOODS} | {GOODS[0]: 0}
    referee.act({"player_1": Action(text=f"Fair? PROPOSE: {' '.join(f'{g}={keep[g]}' for g in GOODS)}")})
    final = referee.act({"player_2": Action(text="ACCEPT")})
    assert final.over
    mine = {g: referee.counts[g] - keep[g] for g in GOODS}
    assert final.results["player_1"].scalar_reward == pytest.approx(
        worth(keep, referee.values["player_1"]) / 10
    )
    assert final.results["player_2"].scalar_reward == pytest.approx(
        worth(mine, referee.values["player_2"]) / 10
    )


def test_barter_bad_commands_are_re_prompted() -> None:
    referee = BarterReferee(MovePolicy(retries=1), max_turns=8)
    referee.start(0)
    update = referee.act({"player_1": Action(text="ACCEPT")})  # nothing to accept yet
    assert "no proposal" in update.results["player_1"].observation.messages[-1].content
    update = referee.act({"player_1": Action(text="PROPOSE: gold=3")})
    assert update.over and update.results["player_1"].info["reason"] == ILLEGAL_MOVE


def test_barter_scripted_trader_closes_deals_with_itself() -> None:
    deals = sum(_barter_transcripts(seed)[0].deal is not None for seed in range(10))
    assert deals >= 8


def test_barter_without_a_deal_pays_nothing() -> None:
    final = play_out("games/barter-text", seed=2, max_turns=2)
    assert all(r.done for r in final.agents.values())


# ---------------------------------------------------------------- tournaments and ratings


def test_round_robin_tournament_ranks_minimax_first(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    rows = run_tournament(
        "games/tictactoe",
        {"perfect": "minimax", "coin": "random", "dice": "random"},
        rounds=2,
        results_path=results,
        name="t1",
    )
    assert rows[0]["name"] == "perfect" and rows[0]["losses"] == 0
    lines = results.read_text().splitlines()
    assert len(lines) == 3 * 2 * 2  # pairs x seat swaps x rounds
    assert leaderboard(results) == rows
    record = json.loads(lines[0])
    assert set(record["seats"].values()) == set(record["scores"])


def test_swiss_tournament_with_a_client_policy() -> None:
    policy = scripted_policy("games/connect4-text", seed=1)
    rows = run_tournament(
        "games/connect4-text",
        {"search": "minimax", "llm-stand-in": policy, "rand": "random", "rand2": "random"},
        pairing="swiss",
        rounds=2,
    )
    assert rows[0]["name"] == "search"
    assert sum(r["games"] for r in rows) == 2 * 2 * 2 * 2  # rounds x pairs x seat swaps x two players
