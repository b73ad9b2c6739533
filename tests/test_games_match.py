"""Multi-client matches at the Python level: seat views over one shared match, on one event loop."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from palaestra.env import EnvContext, InvalidAction
from palaestra.plugins.games.envs import build_env
from palaestra.plugins.games.match import MATCHES, SeatEnv
from palaestra.plugins.games.tournament import game_def
from palaestra.types import Action, AgentResult

# tic-tac-toe cells (reading order) for a drawn game, X then O alternating
DRAW = {"player_1": ["1", "3", "8", "4", "9"], "player_2": ["5", "2", "7", "6"]}
_ids = itertools.count()
pytestmark = pytest.mark.timeout(30)


def seat(env_id: str, match_id: str, name: str | None, **options: object) -> SeatEnv:
    opts = {"match_id": match_id, **({"seat": name} if name else {}), **options}
    env = build_env(game_def(env_id), EnvContext(env_id, f"ep{next(_ids)}", options=opts))
    assert isinstance(env, SeatEnv)
    return env


async def play(env: SeatEnv, moves: list[str]) -> tuple[AgentResult, list[AgentResult]]:
    """Play the listed moves for this seat; returns the final result and everything the seat received."""
    seen = [(await env.reset(seed=0)).agents[env.seat]]
    moves = list(moves)
    while not seen[-1].done:
        result = await env.step({env.seat: Action(text=f"move: {moves.pop(0)}")})
        assert set(result.agents) == {env.seat}  # a seat only ever gets its own results
        seen.append(result.agents[env.seat])
    return seen[-1], seen


async def test_two_seats_play_a_drawn_match_and_the_table_is_cleaned() -> None:
    one, two = seat("games/tictactoe-text", "draw", "player_1"), seat("games/tictactoe-text", "draw", None)
    assert two.seat == "player_2"  # the first free seat
    (final_1, seen_1), (final_2, seen_2) = await asyncio.gather(
        play(one, DRAW["player_1"]), play(two, DRAW["player_2"])
    )
    assert final_1.info == final_2.info == {"result": "draw", "reason": "rules"}
    assert "played 5" in seen_1[1].observation.messages[-1].content  # seat 1 learns seat 2's reply
    assert seen_2[0].observation.messages[0].role == "system"  # seat 2's first result: after X's first move
    assert "played 1" in seen_2[0].observation.messages[-1].content
    assert "draw" not in MATCHES
    await one.close()
    await two.close()


async def test_a_seat_that_does_not_move_in_time_forfeits() -> None:
    one = seat("games/tictactoe-text", "slow", "player_1", move_timeout_s=0.2)
    two = seat("games/tictactoe-text", "slow", "player_2")

    async def sleeper() -> AgentResult:
        first = (await two.reset(seed=0)).agents["player_2"]
        await asyncio.sleep(0.5)  # thinks too long
        late = (await two.step({"player_2": Action(text="move: 5")})).agents["player_2"]
        assert first.observation.legal_actions
        return late

    (final_1, _), late = await asyncio.gather(play(one, ["1"]), sleeper())
    assert final_1.info == {"result": "win", "reason": "move_timeout"}
    assert late.done and late.info["result"] == "loss"
    assert {c.name: c.value for c in late.components} == {"outcome": -1.0, "move_timeout": -1.0}


async def test_a_disconnected_seat_forfeits_after_the_grace_period() -> None:
    one = seat("games/connect4", "gone", "player_0", disconnect_grace_s=0.1)
    two = seat("games/connect4", "gone", "player_1")

    async def leaver() -> None:
        await two.reset(seed=0)
        await two.close()  # the client's stream ended

    async def stayer() -> AgentResult:
        await one.reset(seed=0)
        return (await one.step({"player_0": Action(discrete=3)})).agents["player_0"]

    final, _ = await asyncio.gather(stayer(), leaver())
    assert final.info == {"result": "win", "reason": "disconnect"}


async def test_a_seat_can_reconnect_within_the_grace_period() -> None:
    one = seat("games/tictactoe-text", "back", "player_1", disconnect_grace_s=5)
    two = seat("games/tictactoe-text", "back", "player_2")
    reset_2 = asyncio.create_task(two.reset(seed=0))
    await one.reset(seed=0)
    step_1 = asyncio.create_task(one.step({"player_1": Action(text="move: 1")}))
    await reset_2
    await two.close()  # the connection drops; the seat is kept for the grace period
    again = seat("games/tictactoe-text", "back", "player_2")
    view = (await again.reset()).agents["player_2"].observation
    assert view.messages[0].role == "system" and "X | 2 | 3" in view.messages[-1].content
    assert view.legal_actions == [str(i) for i in range(2, 10)]
    step_2 = asyncio.create_task(again.step({"player_2": Action(text="move: 5")}))
    back_to_1 = (await step_1).agents["player_1"]
    assert not back_to_1.done and "played 5" in back_to_1.observation.messages[-1].content
    step_2.cancel()
    await one.close()
    await again.close()


async def test_simultaneous_match_gathers_both_moves_each_round() -> None:
    one, two = seat("games/rps", "rps", "player_0"), seat("games/rps", "rps", "player_1")

    async def always(env: SeatEnv, move: int) -> list[AgentResult]:
        results = [(await env.reset(seed=0)).agents[env.seat]]
        while not results[-1].done:
            results.append((await env.step({env.seat: Action(discrete=move)})).agents[env.seat])
        return results

    rock, paper = await asyncio.gather(always(one, 0), always(two, 1))
    assert len(rock) == len(paper) == 16  # 15 rounds after the reset
    assert sum(r.scalar_reward for r in rock) == -15 and sum(r.scalar_reward for r in paper) == 15


async def test_seat_rules() -> None:
    seat("games/tictactoe", "rules", "player_1")
    with pytest.raises(InvalidAction, match="already taken"):
        seat("games/tictactoe", "rules", "player_1")
    with pytest.raises(InvalidAction, match="no seat"):
        seat("games/tictactoe", "rules", "player_9")
    with pytest.raises(InvalidAction, match="plays games/tictactoe"):
        seat("games/connect4", "rules", "player_1")
    lonely = seat("games/tictactoe", "lonely", "player_1", join_timeout_s=0.05)
    result = (await lonely.reset(seed=0)).agents["player_1"]
    assert result.truncated and result.info["reason"] == "match_not_filled"
    await lonely.close()
    assert "lonely" not in MATCHES
