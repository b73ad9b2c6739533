"""The environment base API: what a plugin implements to serve an environment.

One environment instance serves one episode. The server calls `reset` once when the episode opens
(and again for each client reset), `step` for each action, and `close` once at the end.

Two flavours share one shape:

* `Env` - synchronous. The server runs `reset`/`step` in a worker thread so that a slow environment
  never blocks the event loop. Cheap environments (pure Python, microseconds per step) set
  `runs_inline = True` to skip the thread hop.
* `AsyncEnv` - coroutines, for environments that wait on sandboxes, verifiers or HTTP judges.

Both are abstract base classes: a subclass that lacks `reset` or `step` cannot be instantiated (and
registering such a class as a factory is refused), and an `Env` with `async def step` (or an `AsyncEnv`
with a plain `def step`) is refused when the class is defined.

Both return `StepResult`: per-agent observations, reward components, checklist results and
terminated/truncated flags.

The scalar reward, one rule: an `AgentResult` with `components` has as its reward the weighted sum of
the components that were computed (status OK); leave `AgentResult.reward` unset. A `reward` that differs
from that sum is refused as a broken reward contract (the episode ends with an infrastructure failure of
the environment). `reward` alone, without components, is for classic RL environments.

Raise `InvalidAction` for an action the environment cannot accept (the client gets INVALID_ARGUMENT and
the episode goes on); raise `InfraError` (or let any other exception escape) when the infrastructure
failed - the episode then ends with an infrastructure failure, which is never reported as a reward.

Optionally, a tensor environment family may also step many episodes with one call: `VectorEnv`, offered
through a `VectorizedFactory` (the `gym` plugin does, with Gymnasium's `make_vec`).
"""

from __future__ import annotations

import abc
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from palaestra.types import Action, EnvSpec, StepResult

if TYPE_CHECKING:
    from palaestra.llm import ChatEndpoint
    from palaestra.registry import RewardRegistry
    from palaestra.sandbox.manager import SandboxManager


class InvalidAction(ValueError):
    """The action does not fit what the environment expects; the message says what was expected."""


class InfraError(RuntimeError):
    """A sandbox, verifier or other piece of infrastructure failed: the episode cannot be scored."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


@dataclass
class EnvContext:
    """What the server hands an environment factory for one episode."""

    env_id: str
    episode_id: str
    config: Mapping[str, Any] = field(default_factory=dict)  # the plugin's [plugins.NAME] table
    options: Mapping[str, Any] = field(default_factory=dict)  # the client's open options
    task: int | str | None = None  # the client's task selector (index or id), if any
    sandboxes: SandboxManager | None = None
    rewards: RewardRegistry | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("palaestra.env"))
    # The server's named chat endpoints ([llm.NAME]); client options may pick one by name, never a URL.
    llm: Mapping[str, ChatEndpoint] = field(default_factory=dict)


class _EnvBase(abc.ABC):  # noqa: B024 - the abstract methods are declared by Env and AsyncEnv
    # True for environments cheap enough to run on the event loop (no I/O, microseconds per step).
    runs_inline: ClassVar[bool] = False
    _coroutines: ClassVar[bool] = False  # whether reset/step/close are coroutine functions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        base = "AsyncEnv" if cls._coroutines else "Env"
        for name in ("reset", "step", "close"):
            method = inspect.getattr_static(cls, name, None)
            if callable(method) and inspect.iscoroutinefunction(method) is not cls._coroutines:
                wanted = "async def" if cls._coroutines else "def (not async def)"
                raise TypeError(
                    f"{cls.__qualname__}.{name} must be `{wanted}`: {cls.__qualname__} is an {base}"
                )


class Env(_EnvBase):
    """A synchronous environment. `actions` maps agent id to its action (one entry for single-agent envs)."""

    @abc.abstractmethod
    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> StepResult: ...

    @abc.abstractmethod
    def step(self, actions: Mapping[str, Action]) -> StepResult: ...

    def close(self) -> None:
        """Free the episode's resources. Called exactly once."""


class AsyncEnv(_EnvBase):
    """An asynchronous environment, for work that waits (sandboxes, verifiers, judges)."""

    _coroutines = True

    @abc.abstractmethod
    async def reset(
        self, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> StepResult: ...

    @abc.abstractmethod
    async def step(self, actions: Mapping[str, Action]) -> StepResult: ...

    async def close(self) -> None:
        """Free the episode's resources (e.g. release sandboxes). Called exactly once."""


AnyEnv = Env | AsyncEnv
EnvFactory = Callable[[EnvContext], AnyEnv]


# ---------------------------------------------------------------- vector steps (optional)


@dataclass
class VectorStep:
    """The outcome of a vector reset or step, one row per episode (Gymnasium's vector API, as columns).

    `infos`: empty, or one dict per episode. Same-step autoreset: `final_mask` marks the episodes that
    ended in this step and were reset; their last observations are their rows of `final_observations`
    and their last infos their entries of `final_infos`."""

    observations: np.ndarray  # [num_envs, ...observation shape]
    rewards: np.ndarray  # [num_envs]
    terminated: np.ndarray  # bool [num_envs]
    truncated: np.ndarray  # bool [num_envs]
    infos: Sequence[Mapping[str, Any]] = ()
    final_mask: np.ndarray | None = None
    final_observations: np.ndarray | None = None
    final_infos: Sequence[Mapping[str, Any]] = ()


class VectorEnv(abc.ABC):
    """N episodes of one tensor environment stepped by ONE call (optional; classic RL).

    An environment family that can step many episodes at once (e.g. Gymnasium's numpy `CartPole`
    vector) offers it by registering a `VectorizedFactory`. The server then answers a client's
    vector requests (`VectorOpenRequest`, docs/protocol.md) with one `reset`/`step` call per message
    instead of one call per episode. Synchronous and cheap: it runs on the event loop.

    `autoreset_mode` is Gymnasium's (`"next_step"`, `"same_step"` or `"disabled"`), fixed when the vector
    is built; `step` autoresets accordingly. Raise `InvalidAction` for what the client got wrong."""

    num_envs: int
    runs_inline: bool = True  # False: calls run in the server's environment threads (slow vectors)

    @abc.abstractmethod
    def reset(
        self, seed: int | None, options: Mapping[str, Any], mask: np.ndarray | None = None
    ) -> VectorStep:
        """Reset the episodes in `mask` (all when None). `seed` as Gymnasium's vectors (episode i gets
        seed + i, or one generator seeded with seed); None continues each episode's random stream."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> VectorStep:
        """Step every episode; `actions` has one row per episode and lies in the action space."""

    def close(self) -> None:  # noqa: B027 - optional: most vectors hold nothing to free
        """Free the vector's resources. Called exactly once."""


VectorFactory = Callable[[EnvContext, int, str], VectorEnv]  # (context, num_envs, autoreset_mode)


@dataclass(frozen=True)
class VectorizedFactory:
    """An environment factory that can also build vectors: register it in place of a plain factory.
    Calling it builds one episode's environment, as any factory; `make_vector` builds a `VectorEnv`."""

    single: EnvFactory
    make_vector: VectorFactory

    def __call__(self, context: EnvContext) -> AnyEnv:
        return self.single(context)


@dataclass
class EnvRegistration:
    spec: EnvSpec
    factory: EnvFactory


__all__ = [
    "AnyEnv",
    "AsyncEnv",
    "Env",
    "EnvContext",
    "EnvFactory",
    "EnvRegistration",
    "EnvSpec",
    "InfraError",
    "InvalidAction",
    "VectorEnv",
    "VectorFactory",
    "VectorStep",
    "VectorizedFactory",
]
