"""Transport benchmark: Palaestra's gRPC Session stream against OpenEnv and in-process Gymnasium.

    python benchmarks/transport.py [--quick] [--rounds N] [--json results.json]

What runs, all in one go (each server in its own process, the clients here):
- echo/text on Palaestra: steps/s and p50/p99 step latency with 1, 16 and 64 concurrent episodes (one
  client, one Session stream), then batched: 64 or 256 episodes per step message (one batch in flight,
  and several in flight at once);
- the same echo workload on OpenEnv (`openenv-core`, the `bench` extra): an echo environment served by
  OpenEnv's own FastAPI/WebSocket server, stepped by its own async client, one WebSocket per episode;
- gym/CartPole-v1 in the per-episode batch form: 4 batches of 64 episodes in flight on one async client
  (`step_batch`), against a plain in-process Gymnasium loop;
- the columnar path (issue 17): `agents.vector.RemoteVectorEnv` over vectors of 64 and 256 CartPole
  episodes, one packed action tensor per message, stepped by one numpy vector call on the server;
- beside the default server (which records every step in its trajectory store), a second Palaestra
  server started with `--no-store` runs the 64-concurrent and batched echo scenarios, so the cost of
  recording shows (system "palaestra-nostore"; the targets use the default server);
- the floor: a bare grpc.aio bidi ping-pong (64 bytes, no handler work) in its own process;
- Stable-Baselines3 PPO on CartPole (8 envs, one torch thread) through `SB3VecEnv` and on SB3's own
  in-process `DummyVecEnv`, in three configurations (`SB3_CONFIGS`: SB3's defaults, rl-baselines3-zoo's
  tuned CartPole hyperparameters, and light env-heavy updates), each with its own ratio (skipped
  without stable-baselines3).

Before each scenario the benchmark waits until the server processes are idle (the trajectory store of
`palaestra serve` writes the episodes the previous scenario closed in a background thread of the
server: that work must not land in the next figure). Every scenario warms up first, then runs until a
step count or a time cap is reached; all scenarios
run `--rounds` times (3; 1 with --quick), interleaved so that each figure sits next to its baseline.
The table shows each scenario's median round; a ratio is the median of the per-round ratios. Targets
are marked PASS/MISS; missing one is not an error: the exit status is non-zero only when something
fails to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ECHO_ENV = "echo/text"
CARTPOLE = "gym/CartPole-v1"
# Never one of the echo env's words, so an episode runs its full `turns` and is then reset.
ECHO_TEXT = "hello there"
ECHO_TURNS = 64
BATCH = 64
BIG_BATCH = 256
CONCURRENCY = (1, 16, 64)
PIPELINED_BATCHES = 4
DISABLED_PLUGINS = ("code", "math", "games", "tools")

# Targets from the project's issues 2 and 17, on the 2-core machine.
TARGET_SINGLE_P50_US = 400.0
TARGET_CONCURRENT_RATIO = 3.0
TARGET_BATCHED_RATIO = 20.0
TARGET_CARTPOLE_FRACTION = 1.0  # vectorised remote CartPole vs in-process single-env Gymnasium
TARGET_SB3_FRACTION = 0.8  # SB3 PPO through SB3VecEnv vs SB3 PPO on its own DummyVecEnv
VECTOR_SIZES = (64, 256)
SB3_ENVS = 8


@dataclass(frozen=True)
class Budget:
    """How long each scenario runs: a warm-up, then until `max_steps` or `seconds`, whichever is first."""

    warmup_s: float
    seconds: float
    max_steps: int


FULL = Budget(warmup_s=1.0, seconds=5.0, max_steps=500_000)
QUICK = Budget(warmup_s=0.3, seconds=1.5, max_steps=100_000)


@dataclass
class Figure:
    """One measured scenario. Latency is per call (a batched call covers many episode steps)."""

    name: str
    system: str
    episodes: int
    steps: int
    seconds: float
    calls: int
    p50_us: float | None = None
    p99_us: float | None = None
    rounds: list[float] = field(default_factory=list)  # steps/s of each round

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "steps_per_s": round(self.steps_per_s, 1)}


@dataclass
class Results:
    machine: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def figure(self, name: str) -> Figure | None:
        return next((f for f in self.figures if f.name == name), None)


# ---------------------------------------------------------------- measuring

StepCall = Callable[[], Awaitable[int]]  # performs one call, returns how many episode steps it covered


async def run_phase(
    loops: list[StepCall], seconds: float, max_steps: int
) -> tuple[int, int, float, list[int]]:
    """Run every loop concurrently until the step budget or the deadline; returns
    (steps, calls, elapsed seconds, per-call latencies in ns)."""
    latencies: list[int] = []
    done = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def drive(call: StepCall) -> None:
        nonlocal done
        clock = time.perf_counter_ns
        while done < max_steps and time.perf_counter() < deadline:
            before = clock()
            covered = await call()  # not `done += await ...`: that would read `done` before the await
            latencies.append(clock() - before)
            done += covered

    await asyncio.gather(*(drive(call) for call in loops))
    return done, len(latencies), time.perf_counter() - started, latencies


async def measure(name: str, system: str, episodes: int, loops: list[StepCall], budget: Budget) -> Figure:
    await run_phase(loops, budget.warmup_s, budget.max_steps)
    steps, calls, elapsed, latencies = await run_phase(loops, budget.seconds, budget.max_steps)
    p50, p99 = percentiles_us(latencies)
    return Figure(name, system, episodes, steps, elapsed, calls, p50, p99)


def percentiles_us(latencies_ns: list[int]) -> tuple[float | None, float | None]:
    if not latencies_ns:
        return None, None
    ordered = np.sort(np.asarray(latencies_ns, dtype=np.int64))
    p50 = float(np.percentile(ordered, 50)) / 1000
    p99 = float(np.percentile(ordered, 99)) / 1000
    return round(p50, 1), round(p99, 1)


# ---------------------------------------------------------------- servers in their own processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def server_process(
    argv: list[str], ready: Callable[[], bool], name: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process, wait until `ready()`, and stop it afterwards (its log goes to a temp file)."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not ready():
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} server did not start (exit {process.poll()}):\n{tail}")
                time.sleep(0.2)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far; None where /proc cannot tell (not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], busy: float = 0.1, window_s: float = 0.5, limit_s: float = 60.0) -> None:
    """Wait until every server process uses under `busy` of a core over `window_s` (at most `limit_s`):
    work a scenario left behind in a server (its store writing the closed episodes) must not be
    measured in the next one."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = [cpu_seconds(pid) for pid in pids]
        time.sleep(window_s)
        after = [cpu_seconds(pid) for pid in pids]
        used = [b - a for a, b in zip(before, after, strict=True) if a is not None and b is not None]
        if all(u < busy * window_s for u in used):
            return


def grpc_ready(address: str) -> Callable[[], bool]:
    def ready() -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return ready


def http_ready(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    return ready


def palaestra_server(port: int, store: Path | None) -> Any:
    """`palaestra serve` as a user starts it (it records every episode in its trajectory store, here
    a file in a temporary directory; None: `--no-store`), with the built-in plugins the benchmark needs."""
    recording = ["--store", str(store)] if store is not None else ["--no-store"]
    argv = [sys.executable, "-m", "palaestra", "serve", "--port", str(port), *recording]
    for plugin in DISABLED_PLUGINS:
        argv += ["--disable-plugin", plugin]
    return server_process(argv, grpc_ready(f"127.0.0.1:{port}"), "palaestra")


def openenv_server(port: int) -> Any:
    argv = [sys.executable, __file__, "--serve-openenv", str(port)]
    return server_process(argv, http_ready(f"http://127.0.0.1:{port}/health"), "OpenEnv")


# ---------------------------------------------------------------- Palaestra workloads


async def palaestra_echo_concurrent(
    address: str, episodes: int, budget: Budget, system: str = "palaestra"
) -> Figure:
    """`episodes` coroutines, each stepping its own episode with `client.step` on one client."""
    from palaestra.agents.client import AsyncClient

    async with AsyncClient(address) as client:
        opened = await client.open(ECHO_ENV, seed=0, options={"turns": ECHO_TURNS}, count=episodes)
        loops = [echo_step_loop(client, step.episode_id) for step in opened]
        return await measure(f"echo {episodes} concurrent", system, episodes, loops, budget)


async def palaestra_echo_batched(
    address: str, raw: bool, in_flight: int, budget: Budget, size: int = BATCH, system: str = "palaestra"
) -> Figure:
    """`in_flight` loops, each stepping its own `size` episodes with one message per step."""
    from palaestra.agents.client import AsyncClient

    async with AsyncClient(address) as client:
        loops = [await echo_batch_loop(client, raw, size) for _ in range(in_flight)]
        name = f"echo batched {size}/msg {'step_batch' if raw else 'step_many'} x{in_flight}"
        return await measure(name, system, size * in_flight, loops, budget)


def echo_step_loop(client: Any, episode_id: str) -> StepCall:
    async def call() -> int:
        step = await client.step(episode_id, ECHO_TEXT)
        if step.done:
            await client.reset(episode_id)
        return 1

    return call


async def echo_batch_loop(client: Any, raw: bool, size: int = BATCH) -> StepCall:
    """One batch of episodes stepped together in one message: typed results (`step_many`), or the raw
    reply (`step_batch`, for hot loops that read only what they need)."""
    opened = await client.open(ECHO_ENV, seed=0, options={"turns": ECHO_TURNS}, count=size)
    actions = {step.episode_id: ECHO_TEXT for step in opened}

    async def typed() -> int:
        results = await client.step_many(actions)
        finished = [episode_id for episode_id, step in results.items() if step.done]
        if finished:
            await client.reset_many(finished)
        return len(results)

    async def untyped() -> int:
        reply = await client.step_batch(actions)
        finished = [episode.episode_id for episode in reply.episodes if episode.done]
        if finished:
            await client.reset_many(finished)
        return len(reply.episodes)

    return untyped if raw else typed


async def palaestra_cartpole_pipelined(address: str, in_flight: int, budget: Budget) -> Figure:
    """`in_flight` batches of 64 CartPole episodes on one async client, raw replies (`step_batch`):
    an asynchronous trainer with several vector envs keeps both processes busy."""
    from palaestra.agents.client import AsyncClient

    rng = np.random.default_rng(0)

    async def batch_loop(client: AsyncClient) -> StepCall:
        opened = await client.open(CARTPOLE, seed=0, count=BATCH)
        ids = [step.episode_id for step in opened]

        async def call() -> int:
            reply = await client.step_batch(
                dict(zip(ids, rng.integers(0, 2, size=BATCH).tolist(), strict=True))
            )
            finished = [episode.episode_id for episode in reply.episodes if episode.done]
            if finished:
                await client.reset_many(finished)
            return len(reply.episodes)

        return call

    async with AsyncClient(address) as client:
        loops = [await batch_loop(client) for _ in range(in_flight)]
        name = f"CartPole step_batch {BATCH}/msg x{in_flight}"
        return await measure(name, "palaestra", BATCH * in_flight, loops, budget)


async def palaestra_cartpole_vector(address: str, num_envs: int, budget: Budget) -> Figure:
    """The columnar path: `agents.vector.RemoteVectorEnv` (next-step autoreset), one packed action
    tensor per message, and the server steps all `num_envs` episodes with one call of CartPole's numpy
    vector environment."""
    from palaestra.agents.vector import RemoteVectorEnv

    vector = RemoteVectorEnv(address, CARTPOLE, num_envs)
    try:
        vector.reset(seed=0)
        actions = np.random.default_rng(0).integers(0, 2, size=(256, num_envs))
        counter = iter(range(1 << 62))

        async def call() -> int:
            vector.step(actions[next(counter) % len(actions)])  # blocking: the only loop
            return num_envs

        return await measure(f"CartPole vector {num_envs}/msg", "palaestra", num_envs, [call], budget)
    finally:
        vector.close()


def sb3_installed() -> bool:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


# SB3 PPO on CartPole in three configurations (one torch thread each): what the environment's share of
# the run, and so the adapter's round trips, weighs depends on them.
SB3_CONFIGS: dict[str, dict[str, Any]] = {
    # `PPO("MlpPolicy", env)`, as SB3's documentation starts: 2,048 steps per env per rollout, 10 epochs
    # of minibatches of 64.
    "defaults": {},
    # rl-baselines3-zoo's tuned hyperparameters for CartPole-v1 (8 envs; its linear schedules as constants).
    "rl-zoo": dict(
        n_steps=32,
        batch_size=256,
        n_epochs=20,
        gae_lambda=0.8,
        gamma=0.98,
        ent_coef=0.0,
        learning_rate=1e-3,
        clip_range=0.2,
    ),
    # Light updates (4 epochs over 1,024-step rollouts): the environment is the largest share here.
    "env-heavy": dict(n_steps=128, batch_size=256, n_epochs=4),
}


def sb3_ppo(address: str | None, budget: Budget, config: str = "defaults") -> Figure:
    """SB3 PPO on CartPole, `SB3_ENVS` environments: through `SB3VecEnv` (address) or on SB3's own
    in-process `DummyVecEnv` (None). Same hyperparameters (`SB3_CONFIGS[config]`), one torch thread each;
    steps/s of `learn` (rollouts and updates alike) over whole rollouts after a warm-up rollout."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from palaestra.agents.sb3 import SB3VecEnv

    torch.set_num_threads(1)
    env: Any
    if address is None:
        env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * SB3_ENVS)
    else:
        env = SB3VecEnv(address, CARTPOLE, SB3_ENVS)
    try:
        model = PPO("MlpPolicy", env, seed=0, verbose=0, **SB3_CONFIGS[config])
        rollout = model.n_steps * SB3_ENVS
        wanted = 8 * 1024 if budget.seconds >= FULL.seconds else 2 * 1024
        steps = max(1, wanted // rollout) * rollout  # whole rollouts, each followed by its update
        model.learn(rollout)  # warm-up: a first rollout and update
        started = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        elapsed = time.perf_counter() - started
    finally:
        env.close()
    name = f"SB3 PPO CartPole {SB3_ENVS} envs, {config}"
    return Figure(name, "palaestra" if address else "sb3", SB3_ENVS, steps, elapsed, steps // SB3_ENVS)


# ---------------------------------------------------------------- the floor: bare gRPC ping-pong

PINGPONG_METHOD = "/bench.PingPong/Session"


async def serve_pingpong(port: int) -> None:
    """A bidi stream that sends each message straight back: bytes in, bytes out, no handler work, no
    (de)serialisation (run in a child process)."""

    async def session(requests: Any, context: Any) -> Any:
        async for message in requests:
            yield message

    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(session)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.PingPong", {"Session": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def pingpong_server(port: int) -> Any:
    argv = [sys.executable, __file__, "--serve-pingpong", str(port)]

    def ready() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    return server_process(argv, ready, "ping-pong")


async def grpc_pingpong(port: int, budget: Budget) -> Figure:
    """One 64-byte message in flight on a grpc.aio bidi stream: the floor under any one step's latency."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(PINGPONG_METHOD)()
        payload = b"x" * 64

        async def ping() -> int:
            await call.write(payload)
            await call.read()
            return 1

        figure = await measure("bare gRPC ping-pong", "grpc", 1, [ping], budget)
        await call.done_writing()
        return figure


def inprocess_cartpole(budget: Budget) -> Figure:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    actions = np.random.default_rng(0).integers(0, 2, size=4096).tolist()
    env.reset(seed=0)

    def run(seconds: float) -> tuple[int, float]:
        steps, started = 0, time.perf_counter()
        deadline = started + seconds
        while steps < budget.max_steps and (steps % 256 or time.perf_counter() < deadline):
            _, _, terminated, truncated, _ = env.step(actions[steps % len(actions)])
            if terminated or truncated:
                env.reset()
            steps += 1
        return steps, time.perf_counter() - started

    run(budget.warmup_s)
    steps, elapsed = run(budget.seconds)
    env.close()
    return Figure("CartPole in-process", "gymnasium", 1, steps, elapsed, steps)


# ---------------------------------------------------------------- OpenEnv


def serve_openenv(port: int) -> None:
    """The OpenEnv side: an echo environment behind OpenEnv's own server (run in a child process)."""
    import uvicorn
    from openenv.core.env_server import create_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, Observation, State

    class SayAction(Action):
        message: str

    class EchoedObservation(Observation):
        echoed: str = ""

    class EchoEnvironment(Environment):  # type: ignore[misc]
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self) -> None:
            self._state = State(episode_id="", step_count=0)

        def reset(
            self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any
        ) -> EchoedObservation:
            self._state = State(episode_id=episode_id or "", step_count=0)
            return EchoedObservation(echoed="ready", done=False, reward=0.0)

        def step(self, action: SayAction, timeout_s: float | None = None, **kwargs: Any) -> EchoedObservation:
            self._state.step_count += 1
            return EchoedObservation(echoed=f"You said: {action.message}", done=False, reward=0.0)

        @property
        def state(self) -> State:
            return self._state

    app = create_app(EchoEnvironment, SayAction, EchoedObservation, max_concurrent_envs=256)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


async def openenv_echo_concurrent(port: int, episodes: int, budget: Budget) -> Figure:
    """`episodes` coroutines, each stepping its own session: OpenEnv's client holds one WebSocket each."""
    from openenv.core.generic_client import GenericEnvClient

    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(GenericEnvClient(base_url=f"http://127.0.0.1:{port}"))
            for _ in range(episodes)
        ]
        for client in clients:
            await client.reset()
        loops = [openenv_step_loop(client) for client in clients]
        return await measure(f"echo {episodes} concurrent", "openenv", episodes, loops, budget)


def openenv_step_loop(client: Any) -> StepCall:
    async def call() -> int:
        await client.step({"message": ECHO_TEXT})
        return 1

    return call


# ---------------------------------------------------------------- ratios, targets, report


def round_ratios(figures: list[Figure]) -> dict[str, float]:
    """The ratios of one round: each side of a ratio was measured minutes apart at most."""

    def best(system: str, prefix: str) -> float | None:
        rates = [f.steps_per_s for f in figures if f.system == system and f.name.startswith(prefix)]
        return max(rates) if rates else None

    pairs = {
        "concurrent_64_vs_openenv_64": (best("palaestra", "echo 64 concurrent"), best("openenv", "echo 64")),
        "batched_vs_openenv_best": (best("palaestra", "echo batched"), best("openenv", "echo")),
        # Not a target: the same without the trajectory store (what recording every step costs).
        "nostore_concurrent_64_vs_openenv_64": (
            best("palaestra-nostore", "echo 64 concurrent"),
            best("openenv", "echo 64"),
        ),
        "nostore_batched_vs_openenv_best": (
            best("palaestra-nostore", "echo batched"),
            best("openenv", "echo"),
        ),
        "cartpole_remote_vs_inprocess": (best("palaestra", "CartPole"), best("gymnasium", "CartPole")),
        "single_vs_openenv_single": (
            best("palaestra", "echo 1 concurrent"),
            best("openenv", "echo 1 concurrent"),
        ),
    }
    for config in SB3_CONFIGS:
        name = f"SB3 PPO CartPole {SB3_ENVS} envs, {config}"
        pairs[f"sb3_{config}_adapter_vs_inprocess"] = (best("palaestra", name), best("sb3", name))
    return {key: ours / theirs for key, (ours, theirs) in pairs.items() if ours is not None and theirs}


def evaluate(results: Results, rounds: list[list[Figure]]) -> None:
    """Ratios are the median over rounds of each round's ratio (load on a shared machine moves both
    sides of a pair together); the latency target uses the median p50."""
    per_round = [round_ratios(figures) for figures in rounds]
    for key in per_round[0]:
        values = [ratios[key] for ratios in per_round if key in ratios]
        results.ratios[key] = round(statistics.median(values), 2)
    single = next(
        (f for f in results.figures if f.name == "echo 1 concurrent" and f.system == "palaestra"), None
    )

    def target(name: str, value: float | None, goal: float, higher_is_better: bool = True) -> None:
        if value is None:
            verdict = "n/a"
        else:
            verdict = "PASS" if (value >= goal if higher_is_better else value <= goal) else "MISS"
        op = ">=" if higher_is_better else "<="
        results.targets.append({"target": name, "value": value, "goal": f"{op} {goal:g}", "verdict": verdict})

    target("single-episode step p50 (us)", single.p50_us if single else None, TARGET_SINGLE_P50_US, False)
    ratios = results.ratios
    target(
        "64 concurrent: palaestra / openenv steps/s",
        ratios.get("concurrent_64_vs_openenv_64"),
        TARGET_CONCURRENT_RATIO,
    )
    target(
        "best batched echo / best openenv steps/s",
        ratios.get("batched_vs_openenv_best"),
        TARGET_BATCHED_RATIO,
    )
    target(
        "best batched CartPole / in-process gymnasium",
        ratios.get("cartpole_remote_vs_inprocess"),
        TARGET_CARTPOLE_FRACTION,
    )
    target("single episode: palaestra / openenv steps/s", ratios.get("single_vs_openenv_single"), 1.0)
    openenv_single = next(
        (f for f in results.figures if f.name == "echo 1 concurrent" and f.system == "openenv"), None
    )
    if single is not None and openenv_single is not None and openenv_single.p50_us:
        target(
            "single episode: palaestra p50 / openenv p50",
            (single.p50_us or 0) / openenv_single.p50_us,
            1.0,
            False,
        )
    for config in SB3_CONFIGS:
        value = ratios.get(f"sb3_{config}_adapter_vs_inprocess")
        target(f"SB3 PPO ({config}): SB3VecEnv / in-process", value, TARGET_SB3_FRACTION)


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_report(results: Results) -> None:
    machine = results.machine
    print(
        f"\nmachine: {machine['cpus']} CPUs, Python {machine['python']}, grpcio {machine['grpcio']}, "
        f"openenv-core {machine['openenv']}"
    )
    print(f"\n{'scenario':<40} {'system':<17} {'episodes':>8} {'steps/s':>10} {'p50 us':>9} {'p99 us':>9}")
    print("-" * 97)
    for f in results.figures:
        print(
            f"{f.name:<40} {f.system:<17} {f.episodes:>8} {fmt(f.steps_per_s):>10} "
            f"{fmt(f.p50_us, 1):>9} {fmt(f.p99_us, 1):>9}"
        )
    print("(latency is per call: a batched call carries all its episodes' steps)")
    for reason in results.skipped:
        print(f"skipped: {reason}")
    print(f"\n{'target':<46} {'value':>10} {'goal':>9}  verdict   (ratios: median of per-round ratios)")
    print("-" * 76)
    for t in results.targets:
        print(f"{t['target']:<46} {fmt(t['value'], 2):>10} {t['goal']:>9}  {t['verdict']}")
    for key, value in results.ratios.items():
        if key.startswith("nostore_"):
            print(f"{key + ' (not a target)':<46} {fmt(value, 2):>10}")


def machine_info() -> dict[str, Any]:
    try:
        from importlib.metadata import version

        openenv = version("openenv-core")
    except Exception:
        openenv = "not installed"
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "openenv": openenv,
        "platform": platform.platform(),
    }


async def run_round(
    address: str,
    openenv_port: int | None,
    budget: Budget,
    pingpong_port: int | None = None,
    server_pids: tuple[int, ...] = (),
    nostore_address: str | None = None,
) -> list[Figure]:
    """Every scenario once, each after the servers went idle. Each Palaestra figure sits next to its
    baseline in time, so that load from elsewhere on a shared machine hits both sides of a ratio alike."""
    figures: list[Figure] = []

    async def add(scenario: Awaitable[Figure]) -> None:
        settle(list(server_pids))
        figures.append(await scenario)

    for episodes in CONCURRENCY:
        await add(palaestra_echo_concurrent(address, episodes, budget))
        if openenv_port is not None:
            await add(openenv_echo_concurrent(openenv_port, episodes, budget))
    for raw, in_flight, size in (
        (False, 1, BATCH),
        (True, 1, BATCH),
        (True, PIPELINED_BATCHES, BATCH),
        (True, 2, BIG_BATCH),
    ):
        await add(palaestra_echo_batched(address, raw, in_flight, budget, size))
    if nostore_address is not None:
        await add(palaestra_echo_concurrent(nostore_address, 64, budget, "palaestra-nostore"))
        for in_flight, size in ((PIPELINED_BATCHES, BATCH), (2, BIG_BATCH)):
            scenario = palaestra_echo_batched(
                nostore_address, True, in_flight, budget, size, "palaestra-nostore"
            )
            await add(scenario)
    await add(palaestra_cartpole_pipelined(address, PIPELINED_BATCHES, budget))
    for num_envs in VECTOR_SIZES:
        await add(palaestra_cartpole_vector(address, num_envs, budget))
    settle(list(server_pids))
    figures.append(inprocess_cartpole(budget))
    if pingpong_port is not None:
        await add(grpc_pingpong(pingpong_port, budget))
    if sb3_installed():
        for config in SB3_CONFIGS:
            settle(list(server_pids))
            figures.append(sb3_ppo(address, budget, config))
            settle(list(server_pids))
            figures.append(sb3_ppo(None, budget, config))
    return figures


def median_figures(rounds: list[list[Figure]]) -> list[Figure]:
    """Per scenario: the round with the median steps/s, with p50/p99 as medians over the rounds."""
    merged = []
    for same in zip(*rounds, strict=True):
        ordered = sorted(same, key=lambda f: f.steps_per_s)
        middle = ordered[len(ordered) // 2]
        p50s = [f.p50_us for f in same if f.p50_us is not None]
        p99s = [f.p99_us for f in same if f.p99_us is not None]
        figure = Figure(**{**asdict(middle), "rounds": [round(f.steps_per_s, 1) for f in same]})
        figure.p50_us = round(statistics.median(p50s), 1) if p50s else None
        figure.p99_us = round(statistics.median(p99s), 1) if p99s else None
        merged.append(figure)
    return merged


async def run_all(budget: Budget, rounds: int) -> Results:
    results = Results(machine=machine_info())
    openenv_installed = results.machine["openenv"] != "not installed"
    if not openenv_installed:
        results.skipped.append("OpenEnv: `pip install openenv-core` (the `bench` extra) to compare")
    if not sb3_installed():
        results.skipped.append("SB3 PPO: `pip install stable-baselines3` (the `bench` extra) to compare")
    palaestra_port, openenv_port, pingpong_port = free_port(), free_port(), free_port()
    nostore_port = free_port()
    with ExitStack() as stack:
        store = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "trajectories.sqlite"
        pids = [stack.enter_context(palaestra_server(palaestra_port, store)).pid]
        pids.append(stack.enter_context(palaestra_server(nostore_port, None)).pid)
        pids.append(stack.enter_context(pingpong_server(pingpong_port)).pid)
        if openenv_installed:
            pids.append(stack.enter_context(openenv_server(openenv_port)).pid)
        address = f"127.0.0.1:{palaestra_port}"
        measured = []
        for number in range(1, rounds + 1):
            print(f"round {number} of {rounds} ...", flush=True)
            openenv = openenv_port if openenv_installed else None
            nostore = f"127.0.0.1:{nostore_port}"
            measured.append(await run_round(address, openenv, budget, pingpong_port, tuple(pids), nostore))
    results.figures = median_figures(measured)
    evaluate(results, measured)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test, not figures)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--rounds", type=int, help="repeat every scenario; medians are reported (default 3, quick 1)"
    )
    parser.add_argument("--serve-openenv", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-pingpong", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_openenv:
        serve_openenv(args.serve_openenv)
        return 0
    if args.serve_pingpong:
        asyncio.run(serve_pingpong(args.serve_pingpong))
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    results = asyncio.run(run_all(QUICK if args.quick else FULL, rounds))
    print_report(results)
    if args.json:
        payload = {
            "machine": results.machine,
            "budget": asdict(QUICK if args.quick else FULL),
            "rounds": rounds,
            "figures": [f.as_json() for f in results.figures],
            "ratios": results.ratios,
            "targets": results.targets,
            "skipped": results.skipped,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
