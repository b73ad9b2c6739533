"""The `math` plugin: verifiable math problems with outcome, format and process rewards.

Environments: generated problems (`math/arithmetic`, `math/fractions`, `math/linear`,
`math/quadratic`, `math/word`, `math/mixed`), the shipped samples (`math/gsm8k-sample`,
`math/math-sample`, `math/qa-sample`), a tool-integrated variant (`math/arithmetic-tools`), and one
environment per dataset listed in the plugin config:

    [plugins.math]
    verify_workers = 2                      # size of the shared verifier pool (default: CPU count)
    difficulty = 2                          # any episode setting, as a default for every math env
    [[plugins.math.datasets]]
    id = "gsm8k-train"                      # served as math/gsm8k-train
    path = "/data/gsm8k/train.jsonl"
    format = "gsm8k"                        # gsm8k | math | qa
    percent = "number"                      # optional per-dataset settings

Reward functions: `math_verify` (async (gold, prediction) -> Verdict through the shared pool) and
`math_steps` (solution text -> StepReport), for other plugins' environments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from palaestra.env import EnvContext
from palaestra.hookspecs import ScriptedPolicy, hookimpl
from palaestra.plugins.hf_datasets import ENTRY_KEYS, uses_datasets
from palaestra.plugins.math.checker import VerifyOptions
from palaestra.plugins.math.datasets import load_dataset
from palaestra.plugins.math.envs import MathEnv, MathVariant, TaskSource
from palaestra.plugins.math.pool import Verdict, configure_shared_pool, shared_pool, shutdown_shared_pool
from palaestra.plugins.math.settings import MathSettings, merge
from palaestra.plugins.math.steps import check_steps
from palaestra.plugins.math.tasks import GENERATORS, load_jsonl, load_sample, mixed_task
from palaestra.registry import EnvRegistry, RewardRegistry
from palaestra.types import EnvSpec

_BOXED_FIRST = MathSettings()
_GSM8K_STYLE = MathSettings(extract=("boxed", "hashes", "answer_is", "last_number"), percent="number")

_GENERATED = {
    "arithmetic": "Integer arithmetic with + - * (and / from difficulty 3); difficulty 0 (a + b) to 5.",
    "fractions": "Arithmetic on fractions; answers are reduced fractions; difficulty 1-5.",
    "linear": "Solve a linear equation in x (fractional solutions from difficulty 4); difficulty 1-5.",
    "quadratic": "Find all real roots of a quadratic (rational roots from difficulty 4); difficulty 1-5.",
    "word": "Short word problems (shopping, travel, sharing, discounts); difficulty 1-5.",
}


def builtin_variants() -> list[MathVariant]:
    variants = [
        MathVariant(
            f"math/{kind}",
            text,
            TaskSource(generate=GENERATORS[kind]),
            _GSM8K_STYLE if kind == "word" else _BOXED_FIRST,
            ("generated",),
        )
        for kind, text in _GENERATED.items()
    ]
    variants += [
        MathVariant(
            "math/mixed",
            "A seeded mix of every generated kind; difficulty 1-5.",
            TaskSource(generate=mixed_task),
            _BOXED_FIRST,
            ("generated",),
        ),
        MathVariant(
            "math/arithmetic-tools",
            "Larger arithmetic with a sandboxed `python` tool (multi-turn); difficulty 1-5 (default 4).",
            TaskSource(generate=GENERATORS["arithmetic"]),
            replace(_BOXED_FIRST, tools=True, difficulty=4),
            ("generated", "tools", "sandbox"),
        ),
        MathVariant(
            "math/gsm8k-sample",
            "Five GSM8K-style word problems shipped with the plugin.",
            TaskSource(load=partial(load_sample, "gsm8k_sample.jsonl", "gsm8k")),
            _GSM8K_STYLE,
            ("dataset",),
        ),
        MathVariant(
            "math/math-sample",
            "Five MATH-style problems (fractions, sets, intervals, matrices, radicals).",
            TaskSource(load=partial(load_sample, "math_sample.jsonl", "math")),
            _BOXED_FIRST,
            ("dataset",),
        ),
        MathVariant(
            "math/qa-sample",
            "Generic question/answer records, one multiple choice.",
            TaskSource(load=partial(load_sample, "qa_sample.jsonl", "qa")),
            _BOXED_FIRST,
            ("dataset",),
        ),
    ]
    return variants


def dataset_variant(entry: Mapping[str, Any]) -> MathVariant:
    """A variant for one `[[plugins.math.datasets]]` entry; its other keys are episode settings."""
    try:
        name, path, fmt = str(entry["id"]), str(entry["path"]), str(entry.get("format", "qa"))
    except KeyError as exc:
        raise ValueError(f"a math dataset entry needs 'id' and 'path': {dict(entry)}") from exc
    defaults = merge(
        _GSM8K_STYLE if fmt == "gsm8k" else _BOXED_FIRST,
        {k: v for k, v in entry.items() if k not in ("id", "description", *ENTRY_KEYS)},
        operator=True,
    )
    # Parquet/CSV, folders, globs and column maps go through Hugging Face `datasets`
    load = partial(load_dataset, entry, fmt) if uses_datasets(entry) else partial(load_jsonl, path, fmt)
    source = TaskSource(load=load)
    return MathVariant(
        f"math/{name}", str(entry.get("description", f"{fmt} dataset {path}")), source, defaults, ("dataset",)
    )


def _factory(variant: MathVariant) -> Any:
    def make(ctx: EnvContext) -> MathEnv:
        return MathEnv(ctx, variant)

    return make


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    configure_shared_pool(int(config["verify_workers"]) if "verify_workers" in config else None)
    for variant in builtin_variants() + [dataset_variant(e) for e in config.get("datasets", [])]:
        registry.add(variant.spec(), _factory(variant))


async def math_verify(
    gold: str, prediction: str, deadline_s: float | None = None, percent: str = "either"
) -> Verdict:
    """Verify an extracted answer against a reference in the shared worker pool."""
    return await shared_pool().verify(gold, prediction, deadline_s, VerifyOptions(percent=percent))  # type: ignore[arg-type]


@hookimpl
def palaestra_register_reward_functions(registry: RewardRegistry, config: Mapping[str, Any]) -> None:
    registry.add(
        "math_verify", math_verify, "math-verify equivalence in killable worker processes -> Verdict"
    )
    registry.add("math_steps", check_steps, "rule-based arithmetic step checker: solution text -> StepReport")


@hookimpl
def palaestra_server_stopping() -> None:
    shutdown_shared_pool()


@hookimpl
def palaestra_scripted_policy(spec: EnvSpec, seed: int | None) -> ScriptedPolicy | None:
    """The reference agent of the math environments (client side: `palaestra run`, training warm-ups)."""
    if not spec.id.startswith("math/"):
        return None
    from palaestra.plugins.math.reference import make_scripted_policy

    return make_scripted_policy(spec.id, seed)
