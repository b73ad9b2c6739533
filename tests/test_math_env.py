"""Math episodes end to end at the Python level (reset/step called directly): rewards, options, task
selection, the PRM hook (with the example HTTP plugin against a stub server) and the python tool in a
real local sandbox."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import palaestra.plugins.math as math_plugin
from palaestra.env import EnvContext, InfraError, InvalidAction
from palaestra.pluginmanager import Plugins
from palaestra.plugins.math.envs import MathEnv
from palaestra.registry import RewardRegistry
from palaestra.types import Action, AgentResult, ComponentStatus, Message, RewardComponent, ToolCall

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    loaded = Plugins()
    loaded.add("math", math_plugin)
    loaded.register_all()
    return loaded


@pytest.fixture
def make_env(plugins: Plugins) -> Callable[..., MathEnv]:
    def make(
        env_id: str, options: dict[str, Any] | None = None, task: int | str | None = None, **ctx: Any
    ) -> MathEnv:
        context = EnvContext(env_id, f"ep-{time.monotonic_ns()}", options=options or {}, task=task, **ctx)
        context.rewards = context.rewards or plugins.rewards
        env = plugins.envs.get(env_id).factory(context)
        assert isinstance(env, MathEnv)
        return env

    return make


def components(result: AgentResult) -> dict[str, RewardComponent]:
    return {c.name: c for c in result.components}


async def answer(env: MathEnv, text: str, seed: int = 1) -> AgentResult:
    await env.reset(seed=seed)
    result = (await env.step({"agent": Action(text=text)})).agents["agent"]
    assert result.terminated
    return result


async def test_registered_environments(plugins: Plugins) -> None:
    ids = set(plugins.envs.ids())
    expected = {
        "arithmetic",
        "fractions",
        "linear",
        "quadratic",
        "word",
        "mixed",
        "gsm8k-sample",
        "arithmetic-tools",
    }
    assert {f"math/{name}" for name in expected} <= ids
    for env_id in ids:
        assert plugins.envs.get(env_id).spec.max_episode_steps >= 1
    assert "math_verify" in plugins.rewards and "math_steps" in plugins.rewards


async def test_first_observation_is_deterministic_by_seed(make_env: Callable[..., MathEnv]) -> None:
    first = (await make_env("math/mixed").reset(seed=11)).agents["agent"].observation
    again = (await make_env("math/mixed").reset(seed=11)).agents["agent"].observation
    other = (await make_env("math/mixed").reset(seed=12)).agents["agent"].observation
    assert [m.role for m in first.messages] == ["system", "user"]
    assert "\\boxed{}" in first.messages[0].content
    assert [(m.role, m.content) for m in first.messages] == [(m.role, m.content) for m in again.messages]
    assert first.messages[1].content != other.messages[1].content
    assert first.tools == []


async def test_terse_prompt_is_the_bare_expression(make_env: Callable[..., MathEnv]) -> None:
    full = (await make_env("math/arithmetic").reset(seed=5)).agents["agent"].observation
    terse = (await make_env("math/arithmetic", {"prompt": "terse"}).reset(seed=5)).agents["agent"].observation
    [message] = terse.messages
    assert message.role == "user" and full.messages[1].content == f"Compute the value of {message.content}."
    word = make_env("math/gsm8k-sample", {"prompt": "terse"}, task=3)
    [problem] = (await word.reset(seed=0)).agents["agent"].observation.messages
    assert word.task is not None and problem.content == word.task.problem
    with pytest.raises(ValueError, match="prompt must be one of"):
        make_env("math/arithmetic", {"prompt": "short"})


async def test_correct_wrong_and_missing_answers(make_env: Callable[..., MathEnv]) -> None:
    env = make_env("math/arithmetic", {"difficulty": 2})
    await env.reset(seed=4)
    assert env.task is not None
    gold = env.task.answer
    right = components(await answer(env, f"Working it out.\n\\boxed{{{gold}}}", seed=4))
    assert right["correct"].value == 1.0 and right["format"].value == 0.0
    wrong = components(await answer(env, f"\\boxed{{{int(gold) + 1}}}", seed=4))
    assert wrong["correct"].value == 0.0 and wrong["correct"].status is ComponentStatus.OK
    unboxed = components(await answer(env, f"The answer is {gold}.", seed=4))
    assert unboxed["correct"].value == 1.0 and unboxed["format"].value == -1.0
    nothing = await answer(env, "I do not know.", seed=4)
    assert components(nothing)["correct"].value == 0.0
    assert nothing.scalar_reward == pytest.approx(-0.1)  # the format penalty: weight 0.1 x -1


async def test_spamming_several_boxed_answers_scores_nothing(make_env: Callable[..., MathEnv]) -> None:
    env = make_env("math/arithmetic")
    await env.reset(seed=2)
    assert env.task is not None
    spam = " ".join(f"\\boxed{{{i}}}" for i in range(-50, 200)) + f" \\boxed{{{env.task.answer}}}"
    result = components(await answer(env, spam, seed=2))
    assert result["correct"].value == 0.0 and result["format"].value == -1.0
    lenient = make_env("math/arithmetic", {"multiple_answers": "last"})
    assert components(await answer(lenient, spam, seed=2))["correct"].value == 1.0


async def test_an_unclosed_box_is_a_format_failure_never_a_fallback(make_env: Callable[..., MathEnv]) -> None:
    env = make_env("math/arithmetic")
    await env.reset(seed=4)
    assert env.task is not None
    gold = env.task.answer
    # The gold answer is the last number, and the box around it is never closed.
    result = components(await answer(env, f"The answer is {gold}. \\boxed{{{gold}", seed=4))
    assert result["correct"].value == 0.0 and result["correct"].status is ComponentStatus.OK
    assert result["format"].value == -1.0 and "never closed" in result["format"].detail


@pytest.mark.timeout(60)
async def test_hostile_replies_are_read_in_linear_time_and_capped(make_env: Callable[..., MathEnv]) -> None:
    env = make_env("math/arithmetic", {"max_response_chars": 200_000})
    # 28 KB of unclosed boxes took 18.6 s with the old quadratic search; now a single pass.
    unclosed = components(await answer(env, "\\boxed{" * 25_000))
    assert unclosed["format"].value == -1.0 and unclosed["correct"].value == 0.0
    long = make_env("math/arithmetic", {"max_response_chars": 1000})
    capped = components(await answer(long, "x" * 1001 + "\\boxed{1}"))
    assert capped["format"].value == -1.0 and "at most 1000" in capped["format"].detail


async def test_a_verifier_hang_is_a_timeout_component_not_a_wrong_answer(
    make_env: Callable[..., MathEnv],
) -> None:
    env = make_env("math/arithmetic", {"verify_deadline_s": 1.0})
    result = await answer(env, "\\boxed{9^{9^{9}}}")
    correct = components(result)["correct"]
    assert correct.status is ComponentStatus.TIMEOUT and correct.contribution == 0.0
    assert components(result)["format"].value == 0.0


async def test_process_component_reports_the_first_wrong_step(make_env: Callable[..., MathEnv]) -> None:
    env = make_env("math/gsm8k-sample", task=3)
    text = "3 * 12 = 36\n36 - 9 = 28\n28 + 5 = 33\n\\boxed{33}"
    result = await answer(env, text)
    steps = components(result)["arithmetic_steps"]
    assert steps.value == pytest.approx(2 / 3) and "first wrong step: 1" in steps.detail
    assert result.info["first_wrong_step"] == 1
    assert components(result)["correct"].value == 0.0  # the gold answer is 32


async def test_dataset_tasks_by_index_and_id_and_percent_setting(make_env: Callable[..., MathEnv]) -> None:
    env = make_env("math/gsm8k-sample", task=4)  # 40% of 1,200 litres -> 480; gsm8k reads 50% as 50
    first = await env.reset(seed=99)
    assert "1,200 litres" in first.agents["agent"].observation.messages[1].content
    assert components(await answer(env, "\\boxed{480}"))["correct"].value == 1.0
    by_id = make_env("math/math-sample", task="2")
    assert components(await answer(by_id, "\\boxed{(2, \\infty)}"))["correct"].value == 1.0
    with pytest.raises(InvalidAction):
        await make_env("math/math-sample", task="no-such-id").reset(seed=1)


async def test_multiple_choice_task(make_env: Callable[..., MathEnv]) -> None:
    env = make_env("math/qa-sample", task=2)
    obs = (await env.reset(seed=0)).agents["agent"].observation
    assert "C. 29" in obs.messages[1].content and "letter" in obs.messages[0].content
    assert components(await answer(env, "29 is prime, so \\boxed{C}"))["correct"].value == 1.0
    assert components(await answer(env, "\\boxed{B}"))["correct"].value == 0.0


async def test_options_are_validated(make_env: Callable[..., MathEnv]) -> None:
    with pytest.raises(ValueError, match="unknown math option"):
        make_env("math/arithmetic", {"difficulty_level": 3})
    with pytest.raises(ValueError, match="difficulty"):
        make_env("math/arithmetic", {"difficulty": 9})
    env = make_env("math/arithmetic")
    with pytest.raises(InvalidAction):
        await env.reset(seed=1, options={"percent": "sometimes"})
    easy = (await env.reset(seed=1)).agents["agent"].observation.messages[1].content
    hard = (
        (await env.reset(seed=1, options={"difficulty": 5})).agents["agent"].observation.messages[1].content
    )
    assert easy != hard


async def test_the_sandbox_command_is_the_operators_never_a_clients(make_env: Callable[..., MathEnv]) -> None:
    with pytest.raises(ValueError, match=r"python_argv.*not a client's"):
        make_env("math/arithmetic-tools", {"python_argv": ["sh", "-c", "true"]})
    env = make_env("math/arithmetic-tools")
    with pytest.raises(InvalidAction, match="python_argv"):
        await env.reset(seed=1, options={"python_argv": "sh"})
    configured = make_env("math/arithmetic-tools", config={"python_argv": ["python3", "-I"]})
    assert configured.settings.python_argv == ("python3", "-I")


async def test_dataset_from_plugin_config(tmp_path: Path) -> None:
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"question": "Half of 10 as a percent of 10?", "answer": "50%"}) + "\n")
    loaded = Plugins()
    loaded.add("math", math_plugin)
    loaded.register_all(
        {"math": {"datasets": [{"id": "mine", "path": str(data), "format": "qa", "percent": "value"}]}}
    )
    env = loaded.envs.get("math/mine").factory(EnvContext("math/mine", "e", rewards=loaded.rewards))
    assert isinstance(env, MathEnv)
    assert components(await answer(env, "\\boxed{0.5}"))["correct"].value == 1.0
    assert components(await answer(env, "\\boxed{50}"))["correct"].value == 0.0


# ---------------------------------------------------------------- learned PRM hook


def _prm_registry(fn: Callable[..., Any]) -> RewardRegistry:
    registry = RewardRegistry()
    registry.add("test_prm", fn)
    return registry


async def test_prm_scores_steps(make_env: Callable[..., MathEnv]) -> None:
    def prm(problem: str, steps: list[str]) -> list[float]:
        return [0.2 if "wrong" in s else 0.9 for s in steps]

    env = make_env("math/arithmetic", {"prm": "test_prm", "prm_aggregate": "min"}, rewards=_prm_registry(prm))
    result = await answer(env, "first step\nsecond, wrong\n\\boxed{1}")
    component = components(result)["prm"]
    assert component.value == pytest.approx(0.2) and "first low step: 1" in component.detail
    assert result.info["prm_scores"] == [0.9, 0.2, 0.9]


async def test_prm_failures_are_statuses_not_scores(make_env: Callable[..., MathEnv]) -> None:
    def broken(problem: str, steps: list[str]) -> list[float]:
        raise ConnectionError("PRM server down")

    async def slow(problem: str, steps: list[str]) -> list[float]:
        await asyncio.sleep(10)
        return [1.0] * len(steps)

    env = make_env("math/arithmetic", {"prm": "test_prm"}, rewards=_prm_registry(broken))
    assert components(await answer(env, "\\boxed{1}"))["prm"].status is ComponentStatus.ERROR
    env = make_env("math/arithmetic", {"prm": "test_prm", "prm_timeout_s": 0.2}, rewards=_prm_registry(slow))
    assert components(await answer(env, "\\boxed{1}"))["prm"].status is ComponentStatus.TIMEOUT
    with pytest.raises(InfraError, match="not registered"):
        make_env("math/arithmetic", {"prm": "missing_prm"})


class _StubPRMHandler(BaseHTTPRequestHandler):
    """A stand-in PRM server: scores a step 0.1 when it says 'wrong', else 0.95; both wire formats."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/score":
            reply: dict[str, Any] = {"scores": [0.1 if "wrong" in s else 0.95 for s in body["steps"]]}
        else:  # OpenAI-compatible chat completion
            steps = [line for line in body["messages"][1]["content"].splitlines() if line.startswith("Step ")]
            scores = [0.1 if "wrong" in s else 0.95 for s in steps]
            reply = {"choices": [{"message": {"role": "assistant", "content": json.dumps(scores)}}]}
        payload = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stub_prm_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubPRMHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _load_example_plugin() -> ModuleType:
    path = REPO / "examples" / "prm-plugin" / "palaestra_http_prm" / "__init__.py"
    spec = importlib.util.spec_from_file_location("palaestra_http_prm", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("protocol", "path"), [("json", "/score"), ("openai", "/v1/chat/completions")])
async def test_example_http_prm_plugin(stub_prm_url: str, protocol: str, path: str) -> None:
    loaded = Plugins()
    loaded.add("math", math_plugin)
    loaded.add("http_prm", _load_example_plugin())
    loaded.register_all({"http_prm": {"endpoint": stub_prm_url + path, "protocol": protocol}})
    assert "http_prm" in loaded.rewards
    context = EnvContext("math/arithmetic", "e", options={"prm": "http_prm"}, rewards=loaded.rewards)
    env = loaded.envs.get("math/arithmetic").factory(context)
    assert isinstance(env, MathEnv)
    result = await answer(env, "2 + 2 = 4\nthis one is wrong\n\\boxed{4}")
    component = components(result)["prm"]
    assert component.status is ComponentStatus.OK and component.value == pytest.approx(0.1)
    assert result.info["prm_scores"] == [0.95, 0.1, 0.95]


# ---------------------------------------------------------------- tool-integrated mode, real sandbox


def _call(code: str, call_id: str = "c1") -> Action:
    return Action(
        message=Message("assistant", "", tool_calls=[ToolCall("python", json.dumps({"code": code}), call_id)])
    )


async def test_tool_mode_with_a_local_sandbox(make_env: Callable[..., MathEnv]) -> None:
    from palaestra.sandbox.manager import SandboxManager

    manager = SandboxManager.for_tests("local")
    try:
        env = make_env("math/arithmetic-tools", {"max_tool_calls": 2}, sandboxes=manager)
        first = (await env.reset(seed=3)).agents["agent"].observation
        assert first.tools and first.tools[0]["function"]["name"] == "python"
        assert env.task is not None
        expression = env.task.problem.split(" of ", 1)[1].rstrip(".")
        exact = f"re.sub(r'(\\d+)', r'Fraction(\\1)', {expression!r})"
        program = f"import re\nfrom fractions import Fraction\nprint(eval({exact}))"
        step = (await env.step({"agent": _call(program)})).agents["agent"]
        [tool_message] = step.observation.messages
        assert tool_message.role == "tool" and tool_message.tool_call_id == "c1" and not step.done
        computed = tool_message.content.strip()
        bad_json = (
            await env.step(
                {
                    "agent": Action(
                        message=Message("assistant", "", tool_calls=[ToolCall("python", "{not json", "c2")])
                    )
                }
            )
        ).agents["agent"]
        assert "error" in bad_json.observation.messages[0].content
        await env.step({"agent": _call("print(1)", "c3")})
        over = (await env.step({"agent": _call("print(2)", "c4")})).agents["agent"]
        assert "limit" in over.observation.messages[0].content
        final = (await env.step({"agent": Action(text=f"\\boxed{{{computed}}}")})).agents["agent"]
        assert final.terminated and components(final)["correct"].value == 1.0, (computed, env.task.answer)
        await env.close()
        # An agent that never answers is cut off one step after the over-budget warning.
        env = make_env("math/arithmetic-tools", {"max_tool_calls": 1}, sandboxes=manager)
        await env.reset(seed=3)
        results = [(await env.step({"agent": _call("print(1)", f"k{i}")})).agents["agent"] for i in range(3)]
        assert [r.truncated for r in results] == [False, False, True]
        assert components(results[-1])["correct"].value == 0.0
        await env.close()
    finally:
        await manager.shutdown()


async def test_tool_mode_without_sandboxes_is_an_infrastructure_failure(
    make_env: Callable[..., MathEnv],
) -> None:
    env = make_env("math/arithmetic-tools")
    await env.reset(seed=1)
    with pytest.raises(InfraError):
        await env.step({"agent": _call("print(1)")})
