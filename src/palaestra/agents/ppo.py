"""PPO for classic (vector-observation, discrete-action) agents, in one readable file.

In the spirit of single-file reference implementations: an actor-critic MLP, rollouts of `num_steps`
from a Gymnasium vector env (for Palaestra, `palaestra.agents.vector.RemoteVectorEnv`: every vector step
is ONE message to the server carrying the actions of all episodes), GAE, and clipped-surrogate updates
over shuffled minibatches.

Autoreset: Gymnasium 1.x vector envs (and `RemoteVectorEnv`) by default reset a finished sub-env on the
NEXT call to `step`, whose action is ignored and whose reward is 0. Those reset transitions are recorded
but masked out of the loss and out of the episode returns; envs that reset in the same step need no mask.
An episode's end, terminated or truncated, stops GAE there (a truncated episode is not bootstrapped from
its final observation, as in CleanRL), so no final observation is needed. Episode returns are summed
here from the rewards, so the numbers do not depend on any wrapper's bookkeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from palaestra.agents.client import PalaestraError
from palaestra.agents.gym import InfraFailureError

log = logging.getLogger("palaestra.ppo")
CHECKPOINT = "ppo.pt"


@dataclass
class PPOConfig:
    total_steps: int = 300_000
    num_steps: int = 128  # per sub-env per rollout
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    minibatches: int = 4
    epochs: int = 4
    clip: float = 0.2
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    seed: int = 0


def layer(inputs: int, outputs: int, gain: float = float(np.sqrt(2))) -> nn.Linear:
    linear = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(linear.weight, gain)
    nn.init.constant_(linear.bias, 0.0)
    return linear


class ActorCritic(nn.Module):
    def __init__(self, observation_size: int, actions: int, hidden: int = 64) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer(observation_size, hidden),
            nn.Tanh(),
            layer(hidden, hidden),
            nn.Tanh(),
            layer(hidden, 1, 1.0),
        )
        self.actor = nn.Sequential(
            layer(observation_size, hidden),
            nn.Tanh(),
            layer(hidden, hidden),
            nn.Tanh(),
            layer(hidden, actions, 0.01),
        )

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        return self.critic(observation).squeeze(-1)

    def act(
        self, observation: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or score) an action: action, its log-prob, the policy entropy, the state value."""
        distribution = torch.distributions.Categorical(logits=self.actor(observation))
        if action is None:
            action = distribution.sample()
        return action, distribution.log_prob(action), distribution.entropy(), self.value(observation)


def resets_on_next_step(envs: Any) -> bool:
    mode = getattr(envs, "metadata", {}).get("autoreset_mode")
    return mode is None or getattr(mode, "name", str(mode)).upper().endswith("NEXT_STEP")


@dataclass
class Rollout:
    observations: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor  # the episode ended at this step
    values: torch.Tensor
    valid: torch.Tensor  # False for autoreset steps whose action was ignored


def advantages_gae(rollout: Rollout, last_value: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    steps = rollout.rewards.shape[0]
    advantages = torch.zeros_like(rollout.rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(steps)):
        next_value = last_value if t == steps - 1 else rollout.values[t + 1]
        not_done = 1.0 - rollout.dones[t]
        delta = rollout.rewards[t] + gamma * next_value * not_done - rollout.values[t]
        running = delta + gamma * lam * not_done * running
        advantages[t] = running
    return advantages


class PPO:
    """Trains an `ActorCritic` on a Gymnasium vector env with a Box observation and Discrete actions."""

    def __init__(self, envs: Any, config: PPOConfig) -> None:
        self.envs = envs
        self.config = config
        torch.manual_seed(config.seed)
        observation_size = int(np.prod(envs.single_observation_space.shape))
        self.agent = ActorCritic(observation_size, int(envs.single_action_space.n), config.hidden)
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=config.learning_rate, eps=1e-5)
        self.next_step_reset = resets_on_next_step(envs)
        self.episode_returns: list[float] = []  # every finished episode, in order
        self.global_step = 0
        self.update = 0  # updates done (a resumed run continues from here)
        self.dropped_rollouts = 0  # rollouts cut by an infrastructure failure (e.g. a server restart)

    def train(
        self,
        on_update: Callable[[dict[str, float]], None] | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
        max_restarts: int = 20,
    ) -> list[float]:
        """Train to `total_steps`. A rollout cut by an infrastructure failure (the server restarted, a
        sandbox died) is dropped - never learned from - and the envs are opened again; after
        `max_restarts` such failures the error propagates. With `checkpoint_dir`, the trainer saves every
        `checkpoint_every` updates (and at the end); `resume` continues from a save."""
        cfg = self.config
        num_envs = self.envs.num_envs
        updates = max(1, cfg.total_steps // (cfg.num_steps * num_envs))
        restarts = 0
        observation = self._reset_envs(cfg.seed + self.update, max_restarts)
        state = _EpisodeState(num_envs)
        while self.update < updates:
            if cfg.anneal_lr:
                self.optimizer.param_groups[0]["lr"] = cfg.learning_rate * (1.0 - self.update / updates)
            started, steps_before = time.perf_counter(), self.global_step
            try:
                rollout, observation = self._collect(observation, state)
            except (InfraFailureError, PalaestraError) as exc:
                restarts += 1
                self.dropped_rollouts += 1
                self.global_step = steps_before
                if restarts > max_restarts:
                    raise
                log.warning("rollout dropped (%s); opening the envs again", exc)
                observation = self._reset_envs(cfg.seed + 7919 * restarts, max_restarts)
                state = _EpisodeState(num_envs)
                continue
            env_seconds = time.perf_counter() - started
            stats = self._learn(rollout, observation)
            self.update += 1
            recent = self.episode_returns[-20:]
            stats |= {
                "step": float(self.global_step),
                "episodes": float(len(self.episode_returns)),
                "return_mean_20": float(np.mean(recent)) if recent else float("nan"),
                "time/rollout_s": env_seconds,
                "dropped_rollouts": float(self.dropped_rollouts),
            }
            if checkpoint_dir is not None and checkpoint_every and self.update % checkpoint_every == 0:
                self.save(checkpoint_dir)
            if on_update is not None:
                on_update(stats)
        if checkpoint_dir is not None:
            self.save(checkpoint_dir)
        return self.episode_returns

    def _reset_envs(self, seed: int, attempts: int) -> np.ndarray:
        """Reset the vector env, retrying while the server is away (each try waits up to the client's
        deadline for it to come back)."""
        for attempt in range(attempts + 1):
            try:
                observation, _ = self.envs.reset(seed=seed)
                return np.asarray(observation)
            except (InfraFailureError, PalaestraError) as exc:
                if attempt == attempts:
                    raise
                log.warning("reset failed (%s); trying again", exc)
                time.sleep(min(5.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ checkpoints

    def save(self, directory: str | Path) -> Path:
        """Weights, optimizer, counters, returns and the RNG state, in `directory/ppo.pt`."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "agent": self.agent.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": asdict(self.config),
            "global_step": self.global_step,
            "update": self.update,
            "episode_returns": self.episode_returns,
            "dropped_rollouts": self.dropped_rollouts,
            "torch_rng": torch.get_rng_state(),
        }
        temporary = path / (CHECKPOINT + ".tmp")
        torch.save(state, temporary)
        temporary.replace(path / CHECKPOINT)  # a crash mid-save never leaves a torn checkpoint
        return path / CHECKPOINT

    def resume(self, directory: str | Path) -> None:
        state = torch.load(Path(directory) / CHECKPOINT, weights_only=False)
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step = int(state["global_step"])
        self.update = int(state["update"])
        self.episode_returns = list(state["episode_returns"])
        self.dropped_rollouts = int(state["dropped_rollouts"])
        torch.set_rng_state(state["torch_rng"])

    def _collect(self, observation: np.ndarray, state: _EpisodeState) -> tuple[Rollout, np.ndarray]:
        cfg = self.config
        shape = (cfg.num_steps, self.envs.num_envs)
        buffers = {name: torch.zeros(shape) for name in ("logprobs", "rewards", "dones", "values", "valid")}
        observations = torch.zeros(shape + self.envs.single_observation_space.shape)
        actions = torch.zeros(shape, dtype=torch.long)
        for t in range(cfg.num_steps):
            obs_tensor = torch.as_tensor(np.asarray(observation), dtype=torch.float32)
            with torch.no_grad():
                action, logprob, _, value = self.agent.act(obs_tensor)
            observation, reward, terminated, truncated, _ = self.envs.step(action.numpy())
            done = np.logical_or(terminated, truncated)
            valid = ~state.resetting if self.next_step_reset else np.ones_like(done)
            observations[t], actions[t] = obs_tensor, action
            buffers["logprobs"][t], buffers["values"][t] = logprob, value
            buffers["rewards"][t] = torch.as_tensor(np.where(valid, reward, 0.0), dtype=torch.float32)
            buffers["dones"][t] = torch.as_tensor(done & valid, dtype=torch.float32)
            buffers["valid"][t] = torch.as_tensor(valid, dtype=torch.float32)
            self.episode_returns.extend(state.record(np.asarray(reward), done, valid))
            self.global_step += self.envs.num_envs
        rollout = Rollout(observations, actions, **buffers)
        return rollout, observation

    def _learn(self, rollout: Rollout, observation: np.ndarray) -> dict[str, float]:
        cfg = self.config
        with torch.no_grad():
            last_value = self.agent.value(torch.as_tensor(np.asarray(observation), dtype=torch.float32))
        advantages = advantages_gae(rollout, last_value, cfg.gamma, cfg.gae_lambda)
        returns = advantages + rollout.values
        keep = rollout.valid.reshape(-1) > 0
        flat_obs = rollout.observations.reshape((-1, *rollout.observations.shape[2:]))[keep]
        flat = {
            "actions": rollout.actions.reshape(-1)[keep],
            "logprobs": rollout.logprobs.reshape(-1)[keep],
            "advantages": advantages.reshape(-1)[keep],
            "returns": returns.reshape(-1)[keep],
        }
        size = flat_obs.shape[0]
        stats = {"loss/policy": 0.0, "loss/value": 0.0, "entropy": 0.0}
        count = 0
        for _ in range(cfg.epochs):
            for index in torch.randperm(size).chunk(cfg.minibatches):  # equal-sized, never a stray row
                _, logprob, entropy, value = self.agent.act(flat_obs[index], flat["actions"][index])
                ratio = torch.exp(logprob - flat["logprobs"][index])
                advantage = flat["advantages"][index]
                advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
                policy_loss = torch.max(
                    -advantage * ratio, -advantage * torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip)
                ).mean()
                value_loss = 0.5 * ((value - flat["returns"][index]) ** 2).mean()
                loss = policy_loss - cfg.entropy_coef * entropy.mean() + cfg.value_coef * value_loss
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                stats["loss/policy"] += float(policy_loss.detach())
                stats["loss/value"] += float(value_loss.detach())
                stats["entropy"] += float(entropy.mean().detach())
                count += 1
        return {name: value / max(count, 1) for name, value in stats.items()}

    def evaluate(self, episodes: int = 10, seed: int = 10_000) -> list[float]:
        """Greedy returns of whole episodes (uses the same vector env; restarts it)."""
        observation, _ = self.envs.reset(seed=seed)
        state = _EpisodeState(self.envs.num_envs)
        finished: list[float] = []
        while len(finished) < episodes:
            with torch.no_grad():
                logits = self.agent.actor(torch.as_tensor(np.asarray(observation), dtype=torch.float32))
            observation, reward, terminated, truncated, _ = self.envs.step(logits.argmax(-1).numpy())
            done = np.logical_or(terminated, truncated)
            valid = ~state.resetting if self.next_step_reset else np.ones_like(done)
            finished.extend(state.record(np.asarray(reward), done, valid))
        return finished[:episodes]


class _EpisodeState:
    """Running returns per sub-env, and which sub-envs reset on the next step."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs)
        self.resetting = np.zeros(num_envs, dtype=bool)

    def record(self, reward: np.ndarray, done: np.ndarray, valid: np.ndarray) -> list[float]:
        self.returns += np.where(valid, reward, 0.0)
        ended = done & valid
        finished = [float(r) for r in self.returns[ended]]
        self.returns[ended] = 0.0
        self.resetting = ended
        return finished
