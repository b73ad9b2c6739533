"""The arithmetic GRPO recipe: a tiny model learns two-digit sums from reward, on CPU, through a server,
and gets better at problems it never trained on.

An example, not part of the runtime package. Shared by `examples/train_grpo_math.py` (the full curve
and the plot) and `tests/test_train_grpo_math.py` (a short run that must show the rise); both import
it from this folder.

1. A 539k-parameter Llama-style model (128 wide, 2 layers) and a character-level tokenizer, built in
   code (no downloads).
2. Warm-up: supervised steps on worked answers to training-split problems (the number alone, computed
   from the expression the agent is shown, as the plugin's scripted agent does), stopped as soon as the
   greedy accuracy on 100 other training-split draws reaches `warmup_target` (25%). The policy then
   knows the format and has begun to add digits, but gets most problems wrong.
3. GRPO on `math/arithmetic` difficulty 0 (`ab + cd`, two-digit numbers whose digits add without
   carrying: 990 problems up to order, answers 20-99) with the `terse` prompt (the bare expression: a
   short context is much quicker for a tiny model to learn to read). Training reward: `correct` +
   0.1 `format`.
4. Test reward: greedy accuracy on the `test` split, `correct` only. Its problems never occur in
   training, in either order: the split is by problem (`palaestra.plugins.math.tasks.problem_split`,
   about 200 of the 990). What carries over is the skill (adding two digits), not the answers.

Why the warm-up stops early rather than teaching the format alone: from a policy at chance, reward
reaches too few samples and the policy must first learn to attend to the digits; in our runs that took
this model longer from reward than a CPU test can wait (see docs/training.md, "Learning, shown").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from palaestra.agents.grpo import GRPOConfig, GRPOTrainer
from palaestra.agents.rollout import EpisodeClient
from palaestra.agents.sft import SupervisedWarmup
from palaestra.agents.tiny import build_model, build_tokenizer
from palaestra.agents.tokens import ChatCodec
from palaestra.plugins.math.steps import evaluate
from palaestra.plugins.math.tasks import format_number
from palaestra.types import Message

ENV = "math/arithmetic"
_TASK = {"difficulty": 0, "prompt": "terse", "extract": ["last_number"], "step_checker": False}
TRAIN_OPTIONS = {**_TASK, "split": "train", "weights": {"format": 0.1}}
# The test and warm-up checks count only `correct`, so they read as accuracy.
TEST_OPTIONS = {**_TASK, "split": "test", "weights": {"format": 0.0}}
WARMUP_CHECK_OPTIONS = {**_TASK, "split": "train", "weights": {"format": 0.0}}
WARMUP_CHECK_SEEDS = 5_000_000  # training-split seeds that neither the warm-up nor GRPO draws


@dataclass
class ArithmeticGRPO:
    steps: int = 150
    warmup_target: float = 0.25
    warmup_max_steps: int = 600
    warmup_examples: int = 400
    group_size: int = 8
    tasks_per_step: int = 32
    learning_rate: float = 1e-3
    epochs_per_batch: int = 4
    kl_beta: float = 0.05
    clip_high: float = 0.28
    hidden_size: int = 128
    eval_every: int = 10
    eval_tasks: int = 200
    seed: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # metrics of every step, step 0 first

    def grpo_config(self) -> GRPOConfig:
        return GRPOConfig(
            env_id=ENV,
            group_size=self.group_size,
            tasks_per_step=self.tasks_per_step,
            task_options=TRAIN_OPTIONS,
            eval_options=TEST_OPTIONS,
            eval_tasks=self.eval_tasks,
            eval_temperature=0.0,
            learning_rate=self.learning_rate,
            epochs_per_batch=self.epochs_per_batch,
            kl_beta=self.kl_beta,
            clip_high=self.clip_high,
            micro_batch_size=256,
            max_new_tokens=8,
            max_turns=1,
            seed=self.seed,
        )

    def test_rewards(self) -> list[tuple[int, float]]:
        """(step, reward on the test split's unseen problems) for every evaluated step."""
        return [(int(m["step"]), m["eval/reward"]) for m in self.history if "eval/reward" in m]


def worked_answer(prompt: Sequence[Message]) -> str:
    """The right reply to a terse arithmetic prompt, from the expression the agent is shown."""
    return format_number(evaluate(prompt[-1].content))


async def opening_messages(
    client: EpisodeClient, options: Mapping[str, Any], count: int, seed: int
) -> list[list[Message]]:
    """The opening messages of `count` episodes (one batched open, then closed)."""
    steps = [
        step
        for index in range(count)
        for step in await client.open(ENV, seed=seed * 100_003 + index, options=dict(options))
    ]
    await client.close([step.episode_id for step in steps])
    return [list(step.result.observation.messages) for step in steps]


async def warm_up(
    recipe: ArithmeticGRPO, model: Any, tokenizer: Any, client: EpisodeClient
) -> tuple[int, float]:
    """Supervised steps until the training-split check reaches the target; returns (steps, accuracy)."""
    prompts = await opening_messages(client, TRAIN_OPTIONS, recipe.warmup_examples, recipe.seed + 7)
    examples = [(prompt, worked_answer(prompt)) for prompt in prompts]
    warmup = SupervisedWarmup(model, ChatCodec(tokenizer), examples, seed=recipe.seed)
    check = GRPOTrainer(
        model,
        tokenizer,
        client,
        GRPOConfig(
            env_id=ENV,
            eval_options=WARMUP_CHECK_OPTIONS,
            eval_tasks=100,
            eval_seed_base=WARMUP_CHECK_SEEDS,
            max_new_tokens=8,
            max_turns=1,
        ),
    )
    accuracy = 0.0
    while warmup.steps < recipe.warmup_max_steps and accuracy < recipe.warmup_target:
        warmup.run(5)
        accuracy = (await check.evaluate())["eval/reward"]
    return warmup.steps, accuracy


async def run_arithmetic_grpo(
    recipe: ArithmeticGRPO,
    client: EpisodeClient,
    *,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> GRPOTrainer:
    """Warm up, then GRPO for `recipe.steps`; metrics go to `recipe.history` (and `on_step`)."""
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, hidden_size=recipe.hidden_size, seed=recipe.seed)
    warmup_steps, warmup_accuracy = await warm_up(recipe, model, tokenizer, client)
    # Built after the warm-up, so the KL reference is the warm-started policy.
    trainer = GRPOTrainer(model, tokenizer, client, recipe.grpo_config())
    metrics = {"step": 0.0, "warmup/steps": float(warmup_steps), "warmup/accuracy": warmup_accuracy}
    metrics |= await trainer.evaluate()
    while True:
        recipe.history.append(metrics)
        if on_step is not None:
            on_step(metrics)
        if trainer.step >= recipe.steps:
            return trainer
        metrics = await trainer.train_step()
        if trainer.step % recipe.eval_every == 0 or trainer.step == recipe.steps:
            metrics |= await trainer.evaluate()
