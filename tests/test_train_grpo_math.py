"""GRPO raises held-out math reward: the arithmetic recipe, shortened, through the real server."""

from __future__ import annotations

import statistics

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from palaestra.agents.arithmetic_recipe import ArithmeticGRPO, run_arithmetic_grpo, worked_answer
from palaestra.agents.client import AsyncClient
from palaestra.types import Message


def test_worked_answers_come_from_the_expression_shown() -> None:
    assert worked_answer([Message("user", "3 + 5")]) == "8"
    assert worked_answer([Message("user", "7 - 9 * 2")]) == "-11"


async def test_grpo_raises_held_out_math_reward(server_address: str) -> None:
    recipe = ArithmeticGRPO(steps=120, seed=0)
    async with AsyncClient(server_address) as client:
        await run_arithmetic_grpo(recipe, client)
    held_out = [reward for _, reward in recipe.held_out()]
    start, last = held_out[0], statistics.mean(held_out[-3:])
    # The warm-up stops early: the policy starts GRPO well short of solving the task...
    assert start <= 0.45, held_out
    # ...and reward alone takes it well above where it started (the mean of the last three evaluations).
    assert last >= start + 0.15, held_out
    assert recipe.history[-1]["train/dropped_episodes"] == 0
