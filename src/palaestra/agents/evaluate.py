"""`palaestra eval`: measure a model on environments and keep every episode.

The model is either any OpenAI-compatible chat endpoint (`--base-url URL --model NAME`: vLLM, SGLang, a
hosted API; tool calls go through the server's own tool-call parser) or a vLLM engine in this process
(`--vllm DIR`: token ids in, the `<tool_call>` convention of `tokens.parse_assistant_text` out).

For each environment, `--tasks` tasks (seeds `--seed`, `--seed + 1`, ...) are played `--episodes` times
each (one group per task, `open(count=N)`), at most `--concurrency` episodes at a time, through the same
`RolloutEngine` the trainers use. Results:

* pass@k for each requested k (the unbiased estimator of Chen et al. 2021, averaged over tasks). An
  episode *passes* when every OUTCOME component it received was computed (status OK) and reached
  `--pass-threshold` (default 1.0: a correct answer, all hidden tests, a won game).
* the mean of the episode return and of each reward component's total per episode, with a 95% confidence
  interval: normal approximation over tasks (each task's mean over its episodes; episodes of one task are
  not independent), or over episodes when there is a single task.
* episodes with an infrastructure failure, and episodes whose outcome was never computed (a verifier that
  timed out or did not run), are counted apart and left out of pass@k and the means: they are not wrong
  answers.

Every episode is written as one record (JSONL, or Parquet when `--out` ends in `.parquet`): messages with
tool calls, tool schemas, reward components with their turn and status, checklist items, how it ended,
timings and the task's seed, usable for inspection, SFT or preference data.

Nothing heavy is imported at module level: `palaestra` builds this parser for every command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palaestra.agents.rollout import EpisodeClient, EpisodeRollout, Policy, RolloutEngine, TaskRequest
from palaestra.agents.tokens import message_to_template
from palaestra.types import ComponentStatus, EpisodeStep, EpisodeSummary, Message, RewardKind, total_reward

Z_95 = 1.959964  # two-sided 95% quantile of the normal distribution


@dataclass
class EvalSettings:
    episodes: int = 4  # per task (the k of pass@k can be at most this)
    tasks: int = 16
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    max_turns: int = 8
    concurrency: int = 32  # episodes in flight at once
    pass_threshold: float = 1.0
    ks: tuple[int, ...] = (1,)


# ---------------------------------------------------------------- running episodes


class _TimedClient:
    """Forwards to the real client and adds up the time spent waiting for the environment server."""

    def __init__(self, client: EpisodeClient) -> None:
        self.client = client
        self.seconds = 0.0

    async def _timed(self, call: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await call
        finally:
            self.seconds += time.perf_counter() - started

    async def open(self, env_id: str, **kwargs: Any) -> list[EpisodeStep]:
        result: list[EpisodeStep] = await self._timed(self.client.open(env_id, **kwargs))
        return result

    async def step_many(
        self, actions: Mapping[str, Any], *, raise_errors: bool = True
    ) -> Mapping[str, EpisodeStep | Exception]:
        result: Mapping[str, EpisodeStep | Exception] = await self._timed(
            self.client.step_many(actions, raise_errors=raise_errors)
        )
        return result

    async def close(self, episode_ids: Sequence[str]) -> list[EpisodeSummary]:
        result: list[EpisodeSummary] = await self._timed(self.client.close(episode_ids))
        return result


class _TimedPolicy:
    """Forwards to the policy and adds up the time spent waiting for it."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.seconds = 0.0

    async def act(self, episodes: Sequence[EpisodeRollout]) -> list[Message]:
        started = time.perf_counter()
        try:
            return await self.policy.act(episodes)
        finally:
            self.seconds += time.perf_counter() - started

    def fits(self, episode: EpisodeRollout) -> bool:
        return self.policy.fits(episode)


@dataclass
class RunTimings:
    """Wall time of one engine run (one or more task groups) and how it splits."""

    wall_s: float
    policy_s: float  # waiting for the model
    env_s: float  # waiting for the environment server (open, steps, close)
    episodes: int  # episodes played in this run


async def timed_run(
    client: EpisodeClient,
    policy: Policy,
    env_id: str,
    tasks: Sequence[TaskRequest],
    group_size: int,
    max_turns: int,
) -> tuple[list[list[EpisodeRollout]], RunTimings]:
    """`RolloutEngine.run` that also reports how its wall time split between the model and the server."""
    timed_client, timed_policy = _TimedClient(client), _TimedPolicy(policy)
    started = time.perf_counter()
    groups = await RolloutEngine(timed_client, timed_policy, max_turns=max_turns).run(
        env_id, tasks, group_size
    )
    timings = RunTimings(
        wall_s=time.perf_counter() - started,
        policy_s=timed_policy.seconds,
        env_s=timed_client.seconds,
        episodes=sum(len(g) for g in groups),
    )
    return groups, timings


async def evaluate_env(
    client: EpisodeClient,
    policy: Policy,
    env_id: str,
    settings: EvalSettings,
    *,
    batched: bool = False,
    model: str = "",
    on_episodes: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Play `settings.tasks` tasks x `settings.episodes` episodes; one record per episode.

    `batched=False` (an HTTP endpoint): one engine run per task, at most `concurrency` episodes in flight,
    so slow episodes never hold up others. `batched=True` (an in-process engine that generates for all
    running episodes at once): tasks run in batches of `concurrency` episodes through one engine run each.
    """
    n = settings.episodes
    tasks = [
        TaskRequest(seed=settings.seed + i, options=dict(settings.options)) for i in range(settings.tasks)
    ]
    per_run = max(1, settings.concurrency // n)
    records: list[dict[str, Any]] = []

    def collect(first_task: int, groups: list[list[EpisodeRollout]], timings: RunTimings) -> None:
        for offset, group in enumerate(groups):
            task_index = first_task + offset
            for episode_index, episode in enumerate(group):
                records.append(
                    episode_record(
                        episode,
                        env_id=env_id,
                        task_index=task_index,
                        episode_index=episode_index,
                        task=tasks[task_index],
                        timings=timings,
                        model=model,
                        pass_threshold=settings.pass_threshold,
                    )
                )
            if on_episodes is not None:
                on_episodes(len(group))

    if batched:
        for start in range(0, len(tasks), per_run):
            chunk = tasks[start : start + per_run]
            groups, timings = await timed_run(client, policy, env_id, chunk, n, settings.max_turns)
            collect(start, groups, timings)
    else:
        limit = asyncio.Semaphore(per_run)

        async def one(index: int) -> None:
            async with limit:
                groups, timings = await timed_run(
                    client, policy, env_id, [tasks[index]], n, settings.max_turns
                )
            collect(index, groups, timings)

        await asyncio.gather(*(one(i) for i in range(len(tasks))))
    records.sort(key=lambda r: (r["task_index"], r["episode_index"]))
    return records


# ---------------------------------------------------------------- records


def episode_outcome(episode: EpisodeRollout, threshold: float) -> bool | None:
    """Whether the episode passed; None when that is unknown (not a wrong answer).

    Unknown: an infrastructure failure, an OUTCOME component that was not computed, or an episode the
    environment ended without any outcome. An episode the policy ran out of turns or tokens in, or whose
    action the environment refused, without an outcome, failed (that is the policy's doing).
    """
    outcomes = [
        c
        for turn in [episode.opening_components, *episode.turn_components]
        for c in turn
        if c.kind is RewardKind.OUTCOME
    ]
    if episode.infra_failure is not None:
        return None
    if not outcomes:
        return False if (episode.out_of_budget or episode.rejected) else None
    if any(c.status is not ComponentStatus.OK for c in outcomes):
        return None
    return all(c.value >= threshold for c in outcomes)


def episode_record(
    episode: EpisodeRollout,
    *,
    env_id: str,
    task_index: int,
    episode_index: int,
    task: TaskRequest,
    timings: RunTimings,
    model: str,
    pass_threshold: float,
) -> dict[str, Any]:
    components = [
        {
            "turn": turn,
            "name": c.name,
            "kind": c.kind.name.lower(),
            "value": c.value,
            "weight": c.weight,
            "status": c.status.name.lower(),
            "detail": c.detail,
        }
        for turn, turn_components in enumerate([episode.opening_components, *episode.turn_components])
        for c in turn_components
    ]  # turn 0: given at reset; turn k: after the policy's k-th reply
    tool_calls = [
        {"turn": turn, "name": call.name, "arguments": call.arguments, "id": call.id}
        for turn, message in enumerate((m for m in episode.messages if m.role == "assistant"), start=1)
        for call in message.tool_calls
    ]
    end = "infra_failure" if episode.infra_failure is not None else ""
    for flag in ("rejected", "out_of_budget", "terminated", "truncated"):
        if not end and getattr(episode, flag):
            end = flag
    returned = total_reward(episode.opening_components) + sum(
        total_reward(turn) for turn in episode.turn_components
    )
    return {
        "env_id": env_id,
        "model": model,
        "task_index": task_index,
        "episode_index": episode_index,
        "seed": task.seed,
        "options": json.dumps(task.options or {}, sort_keys=True),
        "episode_id": episode.episode_id,
        "messages": [_message_dict(m) for m in episode.messages],
        "tools": [json.dumps(tool, sort_keys=True) for tool in episode.tools],
        "tool_calls": tool_calls,
        "turns": episode.turns,
        "components": components,
        "checklist": [
            {
                "item_id": item.item_id,
                "turn": item.turn,
                "passed": item.passed,
                "weight": item.weight,
                "score": item.score if item.score is not None else float(item.passed),
                "status": item.status.name.lower(),
                "reason": item.reason,
            }
            for item in episode.checklist
        ],
        "return": None if episode.infra_failure is not None else returned,
        "passed": episode_outcome(episode, pass_threshold),
        "end": end,
        "rejected": episode.rejected,
        "infra_failure": (
            None
            if episode.infra_failure is None
            else {"source": episode.infra_failure.source, "message": episode.infra_failure.message}
        ),
        "timings": {
            "run_wall_s": timings.wall_s,
            "run_policy_s": timings.policy_s,
            "run_env_s": timings.env_s,
            "run_episodes": timings.episodes,
        },
    }


def _message_dict(message: Message) -> dict[str, Any]:
    """OpenAI shape with every key present (Parquet wants one schema for all rows)."""
    out = message_to_template(message)
    out.setdefault("name", "")
    out.setdefault("tool_call_id", "")
    out.setdefault("tool_calls", [])
    return out


def write_records(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as missing:
            raise SystemExit(
                "writing Parquet needs pyarrow: pip install pyarrow (or use a .jsonl path)"
            ) from missing
        pq.write_table(pa.Table.from_pylist([dict(r) for r in records]), path)
    else:
        with path.open("w") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")
    return path


def read_records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        return rows
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- statistics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) passes."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_ci(per_task: Sequence[Sequence[float]]) -> tuple[float, float, int]:
    """(mean, 95% half-width, count): over task means, or over the values when there is one task."""
    tasks = [list(values) for values in per_task if values]
    units = [sum(v) / len(v) for v in tasks] if len(tasks) > 1 else (tasks[0] if tasks else [])
    if not units:
        return float("nan"), float("nan"), 0
    mean = sum(units) / len(units)
    if len(units) < 2:
        return mean, float("nan"), len(units)
    variance = sum((u - mean) ** 2 for u in units) / (len(units) - 1)
    return mean, Z_95 * math.sqrt(variance / len(units)), len(units)


@dataclass
class Summary:
    env_id: str
    episodes: int
    scored: int  # episodes whose outcome was computed
    infra_failures: int
    unscored: int  # no infrastructure failure, but an outcome not computed (or none reported)
    pass_at: dict[int, tuple[float, float, int]]  # k -> (mean, half-width, tasks)
    means: dict[str, tuple[float, float, int]]  # "return" and each component -> (mean, half-width, count)
    turns: float
    tool_calls: float


def summarize(records: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> Summary:
    by_task: dict[int, list[Mapping[str, Any]]] = {}
    for record in records:
        by_task.setdefault(int(record["task_index"]), []).append(record)
    scored_by_task = [[r for r in rs if r["passed"] is not None] for rs in by_task.values()]
    pass_at: dict[int, tuple[float, float, int]] = {}
    for k in ks:
        values = [
            [pass_at_k(len(rs), sum(bool(r["passed"]) for r in rs), k)]
            for rs in scored_by_task
            if len(rs) >= k
        ]
        pass_at[k] = mean_ci(values)
    counted = [[r for r in rs if r["infra_failure"] is None] for rs in by_task.values()]
    means = {"return": mean_ci([[float(r["return"]) for r in rs] for rs in counted])}
    names = sorted({c["name"] for rs in counted for r in rs for c in r["components"]})
    for name in names:
        per_task: list[list[float]] = []
        for rs in counted:
            totals: list[float] = []
            for r in rs:
                mine = [c for c in r["components"] if c["name"] == name]
                if mine and all(c["status"] == "ok" for c in mine):
                    totals.append(sum(float(c["value"]) for c in mine))
            per_task.append(totals)
        means[name] = mean_ci(per_task)
    infra = sum(r["infra_failure"] is not None for r in records)
    scored = sum(len(rs) for rs in scored_by_task)
    total = max(len(records), 1)
    return Summary(
        env_id=str(records[0]["env_id"]) if records else "",
        episodes=len(records),
        scored=scored,
        infra_failures=infra,
        unscored=len(records) - scored - infra,
        pass_at=pass_at,
        means=means,
        turns=sum(int(r["turns"]) for r in records) / total,
        tool_calls=sum(len(r["tool_calls"]) for r in records) / total,
    )


def summary_table(summary: Summary) -> Any:
    from rich.table import Table

    def fmt(stat: tuple[float, float, int]) -> str:
        mean, half, _ = stat
        if math.isnan(mean):
            return "-"
        return f"{mean:.3f}" + ("" if math.isnan(half) else f" ± {half:.3f}")

    table = Table(
        "measure",
        "mean ± 95% CI",
        "n",
        title=summary.env_id,
        caption=(
            f"{summary.episodes} episodes: {summary.scored} scored, {summary.infra_failures} infrastructure "
            f"failures, {summary.unscored} unscored; {summary.turns:.2f} turns and {summary.tool_calls:.2f} "
            "tool calls per episode"
        ),
    )
    for k, stat in summary.pass_at.items():
        table.add_row(f"pass@{k}", fmt(stat), f"{stat[2]} tasks")
    for name, stat in summary.means.items():
        table.add_row(name, fmt(stat), str(stat[2]))
    return table


# ---------------------------------------------------------------- command line


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("env_ids", nargs="+", metavar="ENV_ID")
    model = parser.add_argument_group("model (one of)")
    model.add_argument("--base-url", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    model.add_argument("--model", help="the model name the endpoint serves (with --base-url)")
    model.add_argument("--api-key", help="bearer key for the endpoint (default: $OPENAI_API_KEY if set)")
    model.add_argument("--vllm", metavar="DIR", help="run this model directory in an in-process vLLM engine")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per task (N)")
    parser.add_argument("--tasks", type=int, default=16, help="tasks per environment")
    parser.add_argument("--seed", type=int, default=0, help="task seeds are seed, seed+1, ...")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an open option")
    parser.add_argument("--k", type=int, action="append", default=None, help="pass@k to report (repeatable)")
    parser.add_argument("--pass-threshold", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32, help="episodes in flight at once")
    parser.add_argument("--max-turns", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=512, help="new tokens per reply")
    parser.add_argument("--max-context", type=int, default=4096, help="--vllm: tokens per episode")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/eval/episodes.jsonl"), help=".jsonl or .parquet"
    )
    parser.add_argument("--no-progress", action="store_true")


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """`--option key=value` pairs (of `eval` and `run`): values read as JSON where they parse, else text."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def _settings(args: argparse.Namespace) -> EvalSettings:
    ks = tuple(sorted(set(args.k or [1, args.episodes])))
    if args.episodes < 1 or args.tasks < 1 or args.concurrency < 1:
        raise SystemExit("--episodes, --tasks and --concurrency must be at least 1")
    if any(k < 1 or k > args.episodes for k in ks):
        raise SystemExit(f"--k must be between 1 and --episodes ({args.episodes}); got {list(ks)}")
    return EvalSettings(
        episodes=args.episodes,
        tasks=args.tasks,
        seed=args.seed,
        options=parse_options(args.option),
        max_turns=args.max_turns,
        concurrency=args.concurrency,
        pass_threshold=args.pass_threshold,
        ks=ks,
    )


def _make_policy(args: argparse.Namespace) -> tuple[Any, bool, str]:
    """(policy, batched, model name) from the command line."""
    import os

    if bool(args.vllm) == bool(args.base_url):
        raise SystemExit(
            "give either --base-url URL --model NAME (an OpenAI-compatible server) or --vllm DIR"
        )
    if args.base_url:
        if not args.model:
            raise SystemExit("--base-url needs --model NAME (the name the endpoint serves)")
        from palaestra.agents.generation import OpenAIChatPolicy

        policy = OpenAIChatPolicy(
            args.base_url,
            args.model,
            api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            concurrency=args.concurrency,
        )
        return policy, False, args.model
    from transformers import AutoTokenizer

    from palaestra.agents.generation import SamplingSettings, VLLMBackend
    from palaestra.agents.rollout import TokenPolicy
    from palaestra.agents.tokens import ChatCodec

    tokenizer = AutoTokenizer.from_pretrained(args.vllm, local_files_only=True)
    backend = VLLMBackend(args.vllm, seed=args.seed)
    settings = SamplingSettings(max_new_tokens=args.max_tokens, temperature=args.temperature)
    return TokenPolicy(ChatCodec(tokenizer), backend, settings, max_context=args.max_context), True, args.vllm


def run_eval_command(
    args: argparse.Namespace, address: str, token: str | None = None, tls_ca: str | None = None
) -> int:
    return asyncio.run(_eval(args, address, token, tls_ca))


async def _eval(args: argparse.Namespace, address: str, token: str | None, tls_ca: str | None) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from palaestra.agents.client import AsyncClient

    console = Console(width=None if sys.stdout.isatty() else 140)  # piped: wide enough for the tables
    settings = _settings(args)
    policy, batched, model = _make_policy(args)
    records: list[dict[str, Any]] = []
    try:
        async with AsyncClient(address, token=token, tls_root_cert=tls_ca) as client:
            with Progress(console=console, disable=args.no_progress) as progress:
                for env_id in args.env_ids:
                    bar = progress.add_task(env_id, total=settings.tasks * settings.episodes)

                    def advance(done: int, bar: Any = bar) -> None:
                        progress.advance(bar, done)

                    records += await evaluate_env(
                        client,
                        policy,
                        env_id,
                        settings,
                        batched=batched,
                        model=model,
                        on_episodes=advance,
                    )
    finally:
        closing = getattr(policy, "aclose", None)
        if closing is not None:
            await closing()
    for env_id in args.env_ids:
        console.print(summary_table(summarize([r for r in records if r["env_id"] == env_id], settings.ks)))
    console.print(f"{len(records)} episodes written to {write_records(records, args.out)}")
    return 0
