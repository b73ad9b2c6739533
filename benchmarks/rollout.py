"""Rollout throughput: sampled tokens/s and the share of rollout wall time spent waiting for the environment.

    python benchmarks/rollout.py [--backend transformers|vllm] [--rounds 3] [--groups 8] [--group-size 8]
                                 [--max-new-tokens 256] [--envs math/arithmetic code/python] [--json FILE]

Run the vLLM backend with the vLLM environment's Python (`.venv-vllm/bin/python benchmarks/rollout.py
--backend vllm`). Each round, per environment, is one lock-step rollout as `RolloutEngine` does it:
open `groups` x `group-size` episodes (`open(count=G)` per task), one batched generation for all of them
(real sampling by the backend, tiny 128-wide Llama built in code, up to `max-new-tokens` per reply), one
`step_many` with every action, close. Environment time is every wait on the server (open, step, close);
policy time is generation. The actions are the environment plugin's scripted reference answers (the
correct number for math, the reference program for code), so that the server does the work it does for a
good policy (math-verify on a real answer; the sandboxed tests of a real program) - the tiny model's own
text would not even contain a program. Figures are the median over rounds (the first round, which
compiles vLLM's sampling ops, is a warm-up and not counted). The server runs in this process (its own
thread) unless `--address` names one: the vLLM environment has no docker-py, so for code episodes run
`palaestra serve --no-store` from the project's venv and pass its address. The sandboxes use the server's
configured backend.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from palaestra.agents.client import AsyncClient
from palaestra.agents.generation import GenerationBackend, SamplingSettings, TransformersBackend
from palaestra.agents.policies import scripted_policy
from palaestra.agents.tiny import build_model, build_tokenizer
from palaestra.agents.tokens import ChatCodec
from palaestra.pluginmanager import client_plugins
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig


async def one_round(
    client: AsyncClient,
    env_id: str,
    codec: ChatCodec,
    backend: GenerationBackend,
    settings: SamplingSettings,
    groups: int,
    group_size: int,
    seed: int,
) -> dict[str, float]:
    spec = await client.describe(env_id)
    started = time.perf_counter()
    opened = await asyncio.gather(
        *(client.open(env_id, seed=seed + g, count=group_size) for g in range(groups))
    )
    steps = [step for group in opened for step in group]
    env_s = time.perf_counter() - started
    prompts = [codec.prompt_ids(s.result.observation.messages, s.result.observation.tools) for s in steps]
    generation_started = time.perf_counter()
    samples = await asyncio.to_thread(backend.generate, prompts, settings)
    policy_s = time.perf_counter() - generation_started
    actions = {}
    plugins = client_plugins()
    for index, step in enumerate(steps):
        policy = scripted_policy(plugins, spec, seed + index)
        assert policy is not None, f"{env_id} has no scripted agent"
        actions[step.episode_id] = next(iter(policy(step).values()))
    waited = time.perf_counter()
    results = await client.step_many(actions)
    await client.close([s.episode_id for s in steps])
    env_s += time.perf_counter() - waited
    wall = time.perf_counter() - started
    tokens = sum(len(s.ids) for s in samples)
    answered = [r for r in results.values() if not isinstance(r, Exception) and r.infra_failure is None]
    rewards = [r.result.scalar_reward for r in answered]
    return {
        "wall_s": wall,
        "policy_s": policy_s,
        "env_s": env_s,
        "tokens": float(tokens),
        "tokens_per_s": tokens / policy_s,
        "env_share": env_s / wall,
        "mean_reward": sum(rewards) / max(len(rewards), 1),
        "infra_failures": float(len(results) - len(answered)),
    }


def make_backend(name: str, model: Any, tokenizer: Any, workdir: Path) -> GenerationBackend:
    if name == "transformers":
        return TransformersBackend(model, tokenizer.pad_token_id)
    from palaestra.agents.generation import VLLMBackend

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    model.save_pretrained(workdir / "model")
    tokenizer.save_pretrained(workdir / "model")
    return VLLMBackend(str(workdir / "model"), seed=0, max_model_len=2048)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, hidden_size=128, max_positions=2048, seed=0).eval()
    codec = ChatCodec(tokenizer)
    settings = SamplingSettings(
        max_new_tokens=args.max_new_tokens, temperature=1.0, stop_ids=tuple(codec.stop_ids)
    )
    results: dict[str, Any] = {"backend": args.backend, "cpus": os.cpu_count(), "envs": {}}
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        backend = make_backend(args.backend, model, tokenizer, Path(workdir))
        address = args.address or stack.enter_context(ServerThread(ServerConfig(port=0))).address
        async with AsyncClient(address) as client:
            for env_id in args.envs:
                rounds = []
                for index in range(args.rounds + 1):
                    figures = await one_round(
                        client, env_id, codec, backend, settings, args.groups, args.group_size, index * 100
                    )
                    if index > 0:  # the first round is a warm-up
                        rounds.append(figures)
                median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
                results["envs"][env_id] = median
                print(
                    f"{args.backend:>12} {env_id:<16} {median['tokens_per_s']:8.0f} tokens/s  "
                    f"environment {100 * median['env_share']:5.1f}% of rollout wall time "
                    f"(wall {median['wall_s']:.2f} s, generation {median['policy_s']:.2f} s, "
                    f"environment {median['env_s']:.2f} s, {median['tokens']:.0f} tokens, "
                    f"mean reward {median['mean_reward']:.2f}, "
                    f"{median['infra_failures']:.0f} infrastructure failures)",
                    flush=True,
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--envs", nargs="+", default=["math/arithmetic", "code/python"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--address", help="a running server (default: one in this process)")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
