"""GRPO for chat agents over Palaestra environments.

One training step:

1. Wake the generation backend; open `tasks_per_step` groups of `group_size` episodes of the same task
   and play them to the end (`RolloutEngine`, token-exact transcripts); put the backend to sleep.
2. Drop episodes with an infrastructure failure (never scored 0); the reward mixer turns each episode's
   reward components into per-turn credit and group-normalised per-turn advantages (`rewards.py`).
3. Clipped token-level policy loss over the policy's own tokens only (environment tokens are masked),
   normalised by the number of policy tokens in the whole batch, optional KL to a frozen reference
   (k3 estimator), gradient accumulation over micro-batches, one optimizer step per epoch.
4. Load the new weights into the backend.

Checkpoints are directories: `model.safetensors` + `config.json` (loadable by transformers and vLLM), the
tokenizer, `optimizer.pt` and `trainer_state.json`; `GRPOTrainer.resume` continues from one.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from palaestra.agents.generation import GenerationBackend, SamplingSettings, TransformersBackend
from palaestra.agents.rewards import RewardMixer, drop_infra_failures, group_turn_advantages
from palaestra.agents.rollout import EpisodeClient, EpisodeRollout, RolloutEngine, TaskRequest, TokenPolicy
from palaestra.agents.tokens import ChatCodec
from palaestra.types import RewardKind, total_reward


@dataclass
class GRPOConfig:
    env_id: str
    group_size: int = 8
    tasks_per_step: int = 4
    task_options: dict[str, Any] = field(default_factory=dict)
    eval_options: dict[str, Any] | None = None  # e.g. {"split": "test"}; default task_options
    eval_tasks: int = 32
    eval_seed_base: int = 1_000_000  # unseen seeds: training seeds stay far below this
    eval_temperature: float = 0.0
    learning_rate: float = 1e-4
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_beta: float = 0.0
    epochs_per_batch: int = 1
    micro_batch_size: int = 16
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    max_new_tokens: int = 32
    max_turns: int = 4
    max_context: int = 512
    kind_weights: dict[str, float] = field(default_factory=dict)  # RewardKind name -> weight
    gate: float | None = None
    scale_by_std: bool = True
    seed: int = 0

    def mixer(self) -> RewardMixer:
        weights = dict.fromkeys(RewardKind, 1.0)
        for name, weight in self.kind_weights.items():
            weights[RewardKind[name.upper()]] = weight
        return RewardMixer(kind_weights=weights, gate=self.gate)


@dataclass
class TrainSample:
    ids: list[int]
    policy_mask: list[bool]
    advantages: list[float]  # per token; 0 on environment tokens


def episode_samples(
    groups: Sequence[Sequence[EpisodeRollout]], mixer: RewardMixer, *, scale_by_std: bool = True
) -> list[TrainSample]:
    """Per-token advantages for every episode: each policy turn's tokens get that turn's advantage."""
    samples = []
    for group in groups:
        rewards = [mixer.turn_rewards(_credited_turns(episode)) for episode in group]
        advantages = group_turn_advantages(rewards, scale_by_std=scale_by_std)
        for episode, per_turn in zip(group, advantages, strict=True):
            token_advantages = [0.0] * len(episode.transcript)
            for (start, end), value in zip(episode.transcript.turns, per_turn, strict=False):
                token_advantages[start:end] = [value] * (end - start)
            samples.append(
                TrainSample(episode.transcript.ids, episode.transcript.policy_mask, token_advantages)
            )
    return samples


def _credited_turns(episode: EpisodeRollout) -> list[list[Any]]:
    turns = [list(components) for components in episode.turn_components]
    if turns and episode.opening_components:  # rewards given at reset count towards the first turn
        turns[0] = episode.opening_components + turns[0]
    return turns


def _has_signal(sample: TrainSample) -> bool:
    return any(a != 0.0 and m for a, m in zip(sample.advantages, sample.policy_mask, strict=True))


def episode_return(episode: EpisodeRollout) -> float:
    """The environment's own scalar return (weighted sum of OK components), for metrics."""
    return total_reward(episode.opening_components) + sum(total_reward(c) for c in episode.turn_components)


def rollout_metrics(
    groups: Sequence[Sequence[EpisodeRollout]], mixer: RewardMixer, prefix: str
) -> dict[str, float]:
    episodes = [e for g in groups for e in g if e.infra_failure is None]
    if not episodes:
        return {f"{prefix}reward": float("nan")}
    metrics = {
        f"{prefix}reward": sum(episode_return(e) for e in episodes) / len(episodes),
        f"{prefix}turns": sum(e.turns for e in episodes) / len(episodes),
        f"{prefix}policy_tokens": sum(sum(e.transcript.policy_mask) for e in episodes) / len(episodes),
    }
    totals: dict[str, float] = {}
    for episode in episodes:
        for name, value in mixer.component_totals(_credited_turns(episode)).items():
            totals[name] = totals.get(name, 0.0) + value
    for name, value in sorted(totals.items()):
        metrics[f"{prefix}component/{name}"] = value / len(episodes)
    return metrics


def token_logprobs(model: Any, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t+1] | ids[:, :t+1]) for every position: batch x (length - 1)."""
    logits = model(input_ids=ids[:, :-1], attention_mask=attention[:, :-1]).logits.float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def pad_batch(samples: Sequence[TrainSample], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention, loss mask and advantages, shifted to align with next-token targets."""
    width = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(samples), width), dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.float32)
    advantages = torch.zeros((len(samples), width), dtype=torch.float32)
    for row, sample in enumerate(samples):
        n = len(sample.ids)
        ids[row, :n] = torch.tensor(sample.ids)
        attention[row, :n] = 1
        mask[row, :n] = torch.tensor(sample.policy_mask, dtype=torch.float32)
        advantages[row, :n] = torch.tensor(sample.advantages)
    return ids, attention, mask[:, 1:], advantages[:, 1:]


class GRPOTrainer:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        client: EpisodeClient,
        config: GRPOConfig,
        *,
        backend: GenerationBackend | None = None,
        reference: Any | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.client = client
        self.config = config
        self.codec = ChatCodec(tokenizer)
        self.backend: GenerationBackend = backend or TransformersBackend(model, tokenizer.pad_token_id)
        self.mixer = config.mixer()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
        self.reference = reference
        if config.kl_beta > 0 and reference is None:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.step = 0
        self._rng = random.Random(config.seed)
        torch.manual_seed(config.seed)

    # ------------------------------------------------------------ rollouts

    def _policy(self, temperature: float) -> TokenPolicy:
        settings = SamplingSettings(max_new_tokens=self.config.max_new_tokens, temperature=temperature)
        return TokenPolicy(self.codec, self.backend, settings, max_context=self.config.max_context)

    def _engine(self, policy: TokenPolicy) -> RolloutEngine:
        return RolloutEngine(self.client, policy, max_turns=self.config.max_turns)

    def training_tasks(self) -> list[TaskRequest]:
        options = dict(self.config.task_options)
        return [
            TaskRequest(seed=self._rng.randrange(self.config.eval_seed_base), options=options)
            for _ in range(self.config.tasks_per_step)
        ]

    async def evaluate(self) -> dict[str, float]:
        """Evaluation reward: one episode per evaluation task, on seeds the training never draws.

        Other seeds are not other problems unless `eval_options` picks a problem-disjoint split
        (math: {"split": "test"}); docs/math.md says which tasks have one."""
        cfg = self.config
        options = dict(cfg.task_options if cfg.eval_options is None else cfg.eval_options)
        tasks = [TaskRequest(seed=cfg.eval_seed_base + i, options=options) for i in range(cfg.eval_tasks)]
        self.backend.wake()
        groups = await self._engine(self._policy(cfg.eval_temperature)).run(cfg.env_id, tasks, group_size=1)
        self.backend.sleep()
        return rollout_metrics(groups, self.mixer, "eval/")

    async def train_step(self) -> dict[str, float]:
        started = time.perf_counter()
        self.backend.wake()
        policy = self._policy(self.config.temperature)
        groups = await self._engine(policy).run(
            self.config.env_id, self.training_tasks(), self.config.group_size
        )
        self.backend.sleep()
        rollout_seconds = time.perf_counter() - started
        kept, dropped = drop_infra_failures(groups)
        metrics = rollout_metrics(groups, self.mixer, "train/")
        samples = episode_samples(kept, self.mixer, scale_by_std=self.config.scale_by_std)
        update_started = time.perf_counter()
        metrics.update(self.update(samples))
        self.backend.load_weights(self.model)
        self.step += 1
        metrics.update(
            {
                "step": float(self.step),
                "train/dropped_episodes": float(dropped),
                "time/rollout_s": rollout_seconds,
                "time/generation_s": policy.generation_seconds,
                "time/update_s": time.perf_counter() - update_started,
            }
        )
        return metrics

    # ------------------------------------------------------------ update

    def update(self, samples: Sequence[TrainSample]) -> dict[str, float]:
        """Clipped policy-gradient steps on the batch; returns loss statistics."""
        cfg = self.config
        # Samples whose every advantage is 0 carry no policy gradient (only KL): skip them unless KL is on.
        useful = [s for s in samples if any(s.policy_mask) and (cfg.kl_beta > 0 or _has_signal(s))]
        if not useful:
            return {"loss": 0.0, "clip_fraction": 0.0, "kl": 0.0, "samples": 0.0}
        policy_tokens = sum(sum(s.policy_mask[1:]) for s in useful)
        batches = [useful[i : i + cfg.micro_batch_size] for i in range(0, len(useful), cfg.micro_batch_size)]
        tensors = [pad_batch(b, self.tokenizer.pad_token_id) for b in batches]
        old = [self._logprobs(self.model, t) for t in tensors] if cfg.epochs_per_batch > 1 else None
        reference = [self._logprobs(self.reference, t) for t in tensors] if cfg.kl_beta > 0 else None
        totals = {"loss": 0.0, "clip_fraction": 0.0, "kl": 0.0}
        self.model.train()
        for _ in range(cfg.epochs_per_batch):
            for index, (ids, attention, mask, advantages) in enumerate(tensors):
                logp = token_logprobs(self.model, ids, attention)
                old_logp = old[index] if old is not None else logp.detach()
                ratio = torch.exp(logp - old_logp)
                clipped = torch.clamp(ratio, 1 - cfg.clip_low, 1 + cfg.clip_high)
                per_token = -torch.minimum(ratio * advantages, clipped * advantages)
                if reference is not None:
                    delta = reference[index] - logp
                    kl = torch.exp(delta) - delta - 1  # k3: unbiased, always >= 0
                    per_token = per_token + cfg.kl_beta * kl
                    totals["kl"] += float((kl.detach() * mask).sum()) / policy_tokens
                loss = (per_token * mask).sum() / policy_tokens
                loss.backward()
                totals["loss"] += float(loss.detach())
                totals["clip_fraction"] += (
                    float((((ratio - clipped).abs() > 0).float() * mask).sum()) / policy_tokens
                )
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        epochs = float(cfg.epochs_per_batch)
        return {name: value / epochs for name, value in totals.items()} | {"samples": float(len(useful))}

    @staticmethod
    def _logprobs(model: Any, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            return token_logprobs(model, tensors[0], tensors[1])

    # ------------------------------------------------------------ checkpoints

    def save(self, directory: str | Path) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        torch.save(self.optimizer.state_dict(), path / "optimizer.pt")
        state = {"step": self.step, "config": asdict(self.config), "rng": self._rng.getstate()}
        (path / "trainer_state.json").write_text(json.dumps(state, default=list))
        return path

    def resume(self, directory: str | Path) -> None:
        """Load weights, optimizer state, step counter and task sampler state from a checkpoint."""
        from safetensors.torch import load_model

        path = Path(directory)
        load_model(self.model, str(path / "model.safetensors"))
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        state = json.loads((path / "trainer_state.json").read_text())
        self.step = int(state["step"])
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self.backend.load_weights(self.model)
