"""GRPO raises math reward on problems the policy never trained on: the arithmetic recipe
(`examples/grpo_math_recipe.py`), shortened, through the real server."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from palaestra.agents.client import AsyncClient
from palaestra.plugins.math.tasks import arithmetic_task, problem_key
from palaestra.types import Message


def _load_recipe() -> ModuleType:
    """The recipe is an example, not part of the package: load it from examples/."""
    path = Path(__file__).resolve().parents[1] / "examples" / "grpo_math_recipe.py"
    spec = importlib.util.spec_from_file_location("grpo_math_recipe", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


recipe_module = _load_recipe()


def test_worked_answers_come_from_the_expression_shown() -> None:
    assert recipe_module.worked_answer([Message("user", "23 + 45")]) == "68"
    assert recipe_module.worked_answer([Message("user", "7 - 9 * 2")]) == "-11"


def test_the_recipe_trains_and_tests_on_disjoint_problems() -> None:
    """What the run below measures on is unseen: no test problem (in either order) is a training one."""
    train, test = recipe_module.TRAIN_OPTIONS, recipe_module.TEST_OPTIONS
    assert (train["split"], test["split"]) == ("train", "test")
    assert train["difficulty"] == test["difficulty"] == 0
    keys = {
        split: {problem_key(arithmetic_task(i, 0, split)) for i in range(1500)} for split in ("train", "test")
    }
    assert len(keys["test"]) > 100 and not keys["train"] & keys["test"]


@pytest.mark.timeout(900)
async def test_grpo_raises_math_reward_on_unseen_problems(server_address: str) -> None:
    recipe = recipe_module.ArithmeticGRPO(steps=60, seed=0)
    async with AsyncClient(server_address) as client:
        await recipe_module.run_arithmetic_grpo(recipe, client)
    rewards = [reward for _, reward in recipe.test_rewards()]
    start, last = rewards[0], statistics.mean(rewards[-3:])
    # The warm-up stops early: the policy starts GRPO well short of solving the test problems...
    assert start <= 0.35, rewards
    # ...and reward alone takes it well above where it started (the mean of the last three evaluations).
    assert last >= start + 0.2, rewards
    assert recipe.history[-1]["train/dropped_episodes"] == 0
