"""The verifiers plugin: verifiers environments written here, served as `vf/<name>` by a real server.

verifiers pins packages the project's own venv cannot share (mcp==2.0.0), so scripts/test.sh installs it
into a venv of its own (.ci-work/venv-verifiers, palaestra installed editable there). The server runs in
that venv as a subprocess, with the environment modules below on its PYTHONPATH; this test plays them
from the project's venv over real gRPC and runs the compliance suite on them.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from palaestra.agents.client import Client, PalaestraError
from palaestra.testing import run_checks
from palaestra.types import Action, ComponentStatus, EpisodeStep, Message, ToolCall

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("PALAESTRA_VERIFIERS_VENV", ROOT / ".ci-work/venv-verifiers"))
PYTHON = VENV / "bin/python"

if not PYTHON.exists() and os.environ.get("CI") != "true":  # CI creates it (scripts/test.sh), never skips
    pytest.skip(f"no verifiers venv at {VENV} (scripts/test.sh creates it)", allow_module_level=True)

pytestmark = pytest.mark.timeout(300)

# ---------------------------------------------------------------- the environments under test

SUMS = """
import verifiers.v1 as vf


class SumsConfig(vf.TasksetConfig):
    largest: int = 3
    system: str = "Answer with the number only."  # a free string: the operator's to set, never a client's


class SumData(vf.TaskData):
    answer: str


class SumTask(vf.Task[SumData]):
    @vf.reward(weight=1.0)
    async def correct(self, task, trace) -> float:
        return float(trace.last_reply.strip() == task.answer)

    @vf.reward(weight=0.5)
    async def brief(self, trace) -> float:
        return 1.0 if len(trace.last_reply) <= 8 else 0.0


class SumsTaskset(vf.Taskset[SumTask, SumsConfig]):
    def load(self):
        for a in range(self.config.largest + 1):
            for b in range(self.config.largest + 1):
                yield SumTask(
                    SumData(name=f"{a}+{b}", prompt=f"What is {a} + {b}?", answer=str(a + b),
                            system_prompt=self.config.system),
                    self.config.task,
                )


__all__ = ["SumsTaskset"]
"""

GUESS = """
import verifiers.v1 as vf


class GuessData(vf.TaskData):
    secret: int


class GuessTask(vf.Task[GuessData]):
    @vf.reward(weight=0.25)
    async def quick(self, trace) -> float:
        return 1.0 / max(trace.num_turns, 1)


class GuessEnvConfig(vf.EnvConfig):
    player: vf.AgentConfig = vf.AgentConfig()


class GuessEnv(vf.Env[GuessEnvConfig]):
    async def run(self, task, agents):
        solved = False
        async with agents.player.interaction(task) as interaction:
            segment = await interaction.turn()
            while not segment.terminated:
                guess = segment.last_reply.strip()
                if guess == str(task.data.secret):
                    solved = True
                    break
                low = guess.isdigit() and int(guess) < task.data.secret
                segment = await interaction.turn("higher" if low else "lower")
        interaction.trace.record_reward("solved", float(solved), 1.0)
        interaction.trace.record_metric("guesses", float(interaction.trace.num_turns))


class GuessTaskset(vf.Taskset[GuessTask, vf.TasksetConfig]):
    def load(self):
        for secret in range(1, 17):
            yield GuessTask(
                GuessData(name=f"secret-{secret}", prompt="Guess my number (1 to 16). Reply with the number.",
                          secret=secret),
                self.config.task,
            )


__all__ = ["GuessEnv", "GuessTaskset"]
"""

CALC = '''
import verifiers.v1 as vf


class CalculatorConfig(vf.ToolsetConfig):
    pass


class Calculator(vf.Toolset[CalculatorConfig]):
    @vf.tool
    async def multiply(self, a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b


class ProductData(vf.TaskData):
    answer: int


class ProductTask(vf.Task[ProductData]):
    @classmethod
    def toolsets(cls, config):
        return [Calculator(CalculatorConfig())]

    @vf.reward
    async def correct(self, task, trace) -> float:
        return float(trace.last_reply.strip() == str(task.answer))

    @vf.reward(weight=0.5)
    async def style(self, trace) -> dict:
        return {"used_tool": float(bool(trace.tool_messages)), "short": float(len(trace.last_reply) <= 4)}

    @vf.metric
    async def tool_calls(self, trace) -> float:
        return float(len(trace.tool_messages))


class ProductTaskset(vf.Taskset[ProductTask, vf.TasksetConfig]):
    def load(self):
        for a, b in [(123, 45), (67, 89), (1234, 5678)]:
            yield ProductTask(
                ProductData(name=f"{a}x{b}", prompt=f"What is {a} * {b}? Use the tool.", answer=a * b),
                self.config.task,
            )


__all__ = ["ProductTaskset"]
'''

BROKEN = """
import verifiers.v1 as vf


class BrokenTask(vf.Task[vf.TaskData]):
    @vf.reward
    async def crashes(self, trace) -> float:
        raise RuntimeError("the rubric is broken")


class BrokenTaskset(vf.Taskset[BrokenTask, vf.TasksetConfig]):
    def load(self):
        yield BrokenTask(vf.TaskData(prompt="Say anything."), self.config.task)


__all__ = ["BrokenTaskset"]
"""

CRASH = """
import verifiers.v1 as vf


class CrashEnvConfig(vf.EnvConfig):
    player: vf.AgentConfig = vf.AgentConfig()


class CrashEnv(vf.Env[CrashEnvConfig]):
    async def run(self, task, agents):
        async with agents.player.interaction(task) as interaction:
            await interaction.turn()
            raise RuntimeError("the game engine crashed")


class CrashTaskset(vf.Taskset[vf.Task, vf.TasksetConfig]):
    def load(self):
        yield vf.Task(vf.TaskData(prompt="Make a move."), self.config.task)


__all__ = ["CrashEnv", "CrashTaskset"]
"""

UNREADY = """
import verifiers.v1 as vf


class UnreadyEnvConfig(vf.EnvConfig):
    player: vf.AgentConfig = vf.AgentConfig()


class UnreadyEnv(vf.Env[UnreadyEnvConfig]):
    async def run(self, task, agents):
        raise RuntimeError("the game engine did not start")


class UnreadyTaskset(vf.Taskset[vf.Task, vf.TasksetConfig]):
    def load(self):
        yield vf.Task(vf.TaskData(prompt="Make a move."), self.config.task)


__all__ = ["UnreadyEnv", "UnreadyTaskset"]
"""

# the other plugins are not needed here (and some of their extras are not in the verifiers venv)
DISABLED = ("code", "math", "games", "tools", "gym", "reasoning_gym", "textarena")
# not a verifiers environment: a client naming it must not get it imported
UNRELATED = """
from pathlib import Path

Path(__file__).with_suffix(".imported").write_text("imported")
"""

MODULES = {
    "vf_test_sums": SUMS,
    "vf_test_operated": SUMS,
    "vf_test_guess": GUESS,
    "vf_test_calc": CALC,
    "vf_test_broken": BROKEN,
    "vf_test_crash": CRASH,
    "vf_test_unready": UNREADY,
    "vf_test_unrelated": UNRELATED,
}

SERVER = """
import sys
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig

disabled = sys.argv[1].split(",")
operator = {"verifiers_envs": {"config": {"vf_test_operated": {"system": "Reply in digits."}}}}
config = ServerConfig(host="127.0.0.1", port=0, disabled_plugins=disabled, plugin_config=operator)
server = ServerThread(config).start()
print(server.address, flush=True)
sys.stdin.read()  # serve until the test closes stdin
server.stop()
"""


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("vf_modules")
    for name, source in MODULES.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


@pytest.fixture(scope="module")
def address(modules: Path) -> Iterator[str]:
    environment = {**os.environ, "PYTHONPATH": str(modules)}
    process = subprocess.Popen(
        [str(PYTHON), "-c", SERVER, ",".join(DISABLED)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        deadline = time.monotonic() + 180  # generous: the CI machine may be loaded
        waiting = selectors.DefaultSelector()  # epoll: select() refuses descriptors above 1023
        waiting.register(process.stdout, selectors.EVENT_READ)
        while not waiting.select(timeout=1.0):
            assert process.poll() is None, "the server in the verifiers venv exited before it served"
            assert time.monotonic() < deadline, "the server in the verifiers venv did not start"
        waiting.close()
        line = process.stdout.readline().strip()
        assert line.startswith("127.0.0.1:"), line
        yield line
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(address: str) -> Iterator[Client]:
    with Client(address) as connected:
        yield connected


def components(step: EpisodeStep) -> dict[str, tuple[float, float]]:
    return {c.name: (c.value, c.weight) for c in step.result.components}


def call(name: str, arguments: str, call_id: str = "c1") -> Action:
    return Action(message=Message("assistant", "", tool_calls=[ToolCall(name, arguments, call_id)]))


# ---------------------------------------------------------------- tests


def test_single_turn_rubric_functions_are_weighted_components(client: Client) -> None:
    for seed in range(4):
        [episode] = client.open("vf/vf_test_sums", seed=seed)
        system, user = episode.result.observation.messages
        assert (system.role, system.content) == ("system", "Answer with the number only.")
        a, b = (int(n) for n in user.content.removeprefix("What is ").rstrip("?").split(" + "))
        right = client.step(episode.episode_id, str(a + b))
        assert right.done and right.result.terminated
        assert components(right) == {"correct": (1.0, 1.0), "brief": (1.0, 0.5)}
        assert right.result.reward == pytest.approx(1.5)
        [episode] = client.open("vf/vf_test_sums", seed=seed)
        wrong = client.step(episode.episode_id, f"I believe it is {a + b + 1}, but I am not sure.")
        assert components(wrong) == {"correct": (0.0, 1.0), "brief": (0.0, 0.5)} and wrong.result.reward == 0
    group = client.open("vf/vf_test_sums", seed=7, count=4)  # a GRPO group: one task, four episodes
    assert len({step.result.observation.messages[-1].content for step in group}) == 1
    replies = dict(zip([step.episode_id for step in group], ["3", "4", "3", "three"], strict=True))
    question = group[0].result.observation.messages[-1].content
    expected = str(sum(int(n) for n in question.removeprefix("What is ").rstrip("?").split(" + ")))
    rewards = {e: step.result.reward for e, step in client.step_many(replies).items()}
    assert rewards == {
        e: (1.5 if reply == expected else 0.5 if len(reply) <= 8 else 0.0) for e, reply in replies.items()
    }
    spec = client.describe("vf/vf_test_sums")
    assert [c.name for c in spec.reward_components] == ["brief", "correct", "env.*"]
    assert "verifiers" in spec.tags


def test_only_verifiers_modules_are_imported(client: Client, modules: Path) -> None:
    refusals = {}
    for env_id in ("vf/no_such_verifiers_module", "vf/vf_test_unrelated", "vf/os.path"):
        with pytest.raises(PalaestraError) as unknown:
            client.open(env_id)
        assert unknown.value.code == grpc.StatusCode.NOT_FOUND, env_id
        refusals[env_id] = str(unknown.value)
    assert "is not a verifiers environment" in refusals["vf/vf_test_unrelated"]
    assert not (modules / "vf_test_unrelated.imported").exists()  # refused without importing it


def test_open_options_are_the_taskset_config(client: Client) -> None:
    questions = set()
    for seed in range(8):
        [episode] = client.open("vf/vf_test_sums", seed=seed, options={"largest": 1})
        questions.add(episode.result.observation.messages[-1].content)
    assert questions <= {f"What is {a} + {b}?" for a in (0, 1) for b in (0, 1)} and len(questions) > 1
    by_name = client.open("vf/vf_test_sums", task="2+3")[0].result.observation.messages[-1].content
    assert by_name == "What is 2 + 3?"
    with pytest.raises(PalaestraError) as refused:
        client.open("vf/vf_test_sums", options={"largest": "many"})
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "largest" in str(refused.value)
    with pytest.raises(PalaestraError) as refused:
        client.open("vf/vf_test_sums", options={"task": {"rewards": {}}})  # plugs code by path: refused
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_free_strings_are_the_operators_never_a_clients(client: Client) -> None:
    """A string option could name a URL, a file or a command: only `[plugins.verifiers_envs.config.<name>]`
    sets one."""
    with pytest.raises(PalaestraError) as refused:
        client.open("vf/vf_test_sums", options={"system": "http://127.0.0.1:1/"})
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "system" in str(refused.value)
    assert "system" not in client.describe("vf/vf_test_sums").options_schema["properties"]
    [operated] = client.open("vf/vf_test_operated", seed=0)
    assert operated.result.observation.messages[0].content == "Reply in digits."


def test_an_env_run_plays_several_turns(client: Client) -> None:
    [episode] = client.open("vf/vf_test_guess", seed=10)  # the secret is 11
    assert episode.result.observation.messages[-1].content.startswith("Guess my number")
    low, high, replies, step = 1, 16, 0, episode
    while not step.done:
        guess = (low + high) // 2
        step = client.step(episode.episode_id, str(guess))
        replies += 1
        if not step.done:
            [hint] = step.result.observation.messages
            assert hint.role == "user" and hint.content in ("higher", "lower")
            low, high = (guess + 1, high) if hint.content == "higher" else (low, guess - 1)
    assert guess == 11 and replies > 2 and step.result.terminated
    assert components(step) == {"quick": (pytest.approx(1 / replies), 0.25), "env.solved": (1.0, 1.0)}
    assert step.result.reward == pytest.approx(1 + 0.25 / replies)
    assert step.result.info["metrics"] == {"guesses": replies}

    [episode] = client.open("vf/vf_test_guess", seed=10, options={"max_turns": 2})
    first = client.step(episode.episode_id, "1")
    last = client.step(episode.episode_id, "2")
    assert not first.done and last.done and last.result.truncated and not last.result.terminated
    assert components(last)["env.solved"] == (0.0, 1.0)


def test_toolset_tools_are_palaestra_tools(client: Client) -> None:
    [episode] = client.open("vf/vf_test_calc", task=2)
    [tool] = episode.result.observation.tools
    assert tool["function"]["name"] == "calculator_multiply"
    assert tool["function"]["description"] == "Multiply two integers."
    assert tool["function"]["parameters"]["required"] == ["a", "b"]
    bad = client.step(episode.episode_id, call("calculator_multiply", json.dumps({"a": "x", "b": 2})))
    [error] = bad.result.observation.messages
    assert not bad.done and error.role == "tool" and "invalid arguments" in error.content
    done = client.step(
        episode.episode_id, call("calculator_multiply", json.dumps({"a": 1234, "b": 5678}), "c2")
    )
    [result] = done.result.observation.messages
    assert (result.role, result.content, result.tool_call_id) == ("tool", str(1234 * 5678), "c2")
    final = client.step(episode.episode_id, result.content)
    assert final.done and final.result.reward == pytest.approx(1.5)
    # keyed scores (a reward function returning a dict) arrive under the environment's family
    assert components(final) == {"correct": (1.0, 1.0), "env.used_tool": (1.0, 0.5), "env.short": (0.0, 0.5)}
    assert final.result.info["metrics"] == {"tool_calls": 2.0}


def test_the_environment_raising_after_the_reply_is_the_policys_failure(client: Client) -> None:
    """A rubric or game engine that raises on the policy's reply scores it 0 (every reward function ERROR,
    the exception as detail), never an infrastructure failure a trainer would drop."""
    [episode] = client.open("vf/vf_test_broken", seed=0)
    step = client.step(episode.episode_id, "anything")
    assert step.done and step.infra_failure is None and step.result.terminated
    [crashes] = step.result.components
    assert (crashes.name, crashes.value, crashes.status) == ("crashes", 0.0, ComponentStatus.ERROR)
    assert "the rubric is broken" in crashes.detail and step.result.reward == 0.0
    [episode] = client.open("vf/vf_test_crash", seed=0)
    step = client.step(episode.episode_id, "e4")
    assert step.done and step.infra_failure is None and step.result.reward == 0.0
    [error] = step.result.components
    assert (error.name, error.status) == ("env.error", ComponentStatus.ERROR)
    assert "the game engine crashed" in error.detail


def test_the_environment_failing_before_any_reply_is_an_infrastructure_failure(client: Client) -> None:
    [episode] = client.open("vf/vf_test_unready", seed=0)
    assert episode.done and episode.infra_failure is not None and not episode.agents
    assert episode.infra_failure.source == "environment"
    assert "the game engine did not start" in episode.infra_failure.message


def test_compliance_suite(client: Client, modules: Path) -> None:
    envs = ["vf/vf_test_sums", "vf/vf_test_guess", "vf/vf_test_calc"]
    for env_id in envs:
        outcomes = run_checks(client, None, env_id)
        assert not any(outcomes.values()), outcomes
    # the in-process check (close may run twice) needs the plugin, so it runs in the verifiers venv
    script = (
        "import sys\n"
        "from palaestra.pluginmanager import load_plugins\n"
        "from palaestra.testing import check_close_idempotent\n"
        "plugins = load_plugins(disabled=sys.argv[1].split(','))\n"
        "for env_id in sys.argv[2:]:\n"
        "    check_close_idempotent(plugins, env_id)\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(modules)}
    done = subprocess.run(
        [str(PYTHON), "-c", script, ",".join(DISABLED), *envs],
        capture_output=True,
        text=True,
        env=environment,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
