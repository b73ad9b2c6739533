"""The contract between clients, the server and environments (issue 13), through a real server over gRPC:
open options checked against each environment's JSON Schema, bounded policy input that stays the
policy's failure, reward results checked against the declared reward spec, and the catalog showing
reward specs, option schemas and the isolation in force."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from palaestra import types as t
from palaestra.agents.client import Client, PalaestraError
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig

DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture(scope="module")
def contract_server() -> Iterator[ServerThread]:
    config = ServerConfig(
        port=0, plugin_modules=["bad_plugin_for_tests"], sandbox={"allow_weaker_isolation": True}
    )
    with ServerThread(config) as server:
        yield server


@pytest.fixture
def client(contract_server: ServerThread) -> Iterator[Client]:
    with Client(contract_server.address) as connected:
        yield connected


def refused(client: Client, env_id: str, **kwargs: Any) -> str:
    with pytest.raises(PalaestraError) as error:
        episodes = client.open(env_id, **kwargs)
        client.close([e.episode_id for e in episodes])
    assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT, error.value
    return error.value.message


# ---------------------------------------------------------------- options


def test_integer_options_stay_integers_and_fractions_are_refused(client: Client) -> None:
    [episode] = client.open("echo/text", seed=1, options={"turns": 2})  # travels as 2.0 in a Struct
    first = client.step(episode.episode_id, "no")
    second = client.step(episode.episode_id, "no")
    assert not first.done and second.result.truncated  # exactly 2 turns: the option arrived as int 2
    client.close(episode.episode_id)
    message = refused(client, "echo/text", options={"turns": 2.7})
    assert "'turns'" in message and "integer" in message and "1 to 64" in message


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], None, math.nan, math.inf, "3", True])
def test_option_values_of_the_wrong_shape_are_refused_at_open(client: Client, value: Any) -> None:
    message = refused(client, "echo/text", options={"turns": value})
    assert "turns" in message


def test_unknown_options_are_refused_naming_the_known_ones(client: Client) -> None:
    message = refused(client, "math/arithmetic", options={"difficulty": 1, "bogus": 2})
    assert "bogus" in message and "known options" in message and "difficulty" in message


def test_gym_seed_and_options_are_checked_at_open(client: Client) -> None:
    assert "seed must be a non-negative integer" in refused(client, "gym/CartPole-v1", seed=-1)
    assert "'low'" in refused(client, "gym/CartPole-v1", options={"low": "abc"})
    # Numbers of the right type that the environment itself refuses are the client's mistake too.
    assert "refused" in refused(client, "gym/CartPole-v1", options={"low": 1.0, "high": -1.0})
    [ok] = client.open("gym/CartPole-v1", seed=0, options={"low": -0.01, "high": 0.01})
    assert ok.infra_failure is None
    client.close(ok.episode_id)


@pytest.mark.parametrize(
    ("env_id", "options", "names"),
    [
        ("tools/shop", {"checklist_mode": 3}, "checklist_mode"),
        ("tools/shop", {"policy_penalty": "high"}, "policy_penalty"),
        ("tools/web-facts", {"stop_on_required": "yes"}, "stop_on_required"),
        ("code/python", {"max_submissions": 1.5}, "max_submissions"),
        ("code/python", {"rewards": {"format_weight": [1]}}, "rewards.format_weight"),
        ("math/arithmetic", {"weights": {"format": None}}, "weights.format"),
        ("games/tictactoe-text", {"illegal_move_retries": 99}, "illegal_move_retries"),
    ],
)
def test_plugin_options_of_the_wrong_type_are_invalid_argument(
    client: Client, env_id: str, options: dict[str, Any], names: str
) -> None:
    assert f"'{names}'" in refused(client, env_id, options=options)


def test_reset_options_are_checked_too(client: Client) -> None:
    [episode] = client.open("math/arithmetic", seed=1)
    with pytest.raises(PalaestraError) as error:
        client.reset(episode.episode_id, seed=1, options={"difficulty": "hard"})
    assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT and "'difficulty'" in error.value.message
    client.close(episode.episode_id)


def test_every_builtin_environment_declares_its_options_schema(client: Client) -> None:
    undeclared = [
        spec.id
        for spec in client.list_envs()
        if spec.plugin != "bad_plugin_for_tests" and not spec.options_schema
    ]
    assert not undeclared


# ---------------------------------------------------------------- hostile policy input


@pytest.mark.parametrize("env_id", ["tools/shop", "math/arithmetic-tools", "code/python-tools"])
def test_deeply_nested_tool_arguments_are_the_policys_failure(client: Client, env_id: str) -> None:
    [episode] = client.open(env_id, seed=3)
    tool = episode.result.observation.tools[0]["function"]["name"]
    call = t.ToolCall(tool, '{"code": ' + DEEP + "}", "c1")
    step = client.step(episode.episode_id, t.Action(message=t.Message("assistant", "", tool_calls=[call])))
    assert step.infra_failure is None, step.infra_failure
    reply = step.result.observation.messages[0]
    assert reply.role == "tool" and "nested" in reply.content
    if env_id == "tools/shop":  # the environment's defined penalty for a bad call
        penalty = next(c for c in step.result.components if c.name == "invalid_tool_call")
        assert penalty.value == -1.0
    client.close(episode.episode_id)


def test_oversized_policy_input_is_invalid_argument(client: Client) -> None:
    [episode] = client.open("echo/text", seed=1)
    with pytest.raises(PalaestraError) as error:
        client.step(episode.episode_id, "x" * 1_000_001)
    assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT and "at most 1000000" in error.value.message
    calls = [t.ToolCall("f", "{}", str(i)) for i in range(65)]
    with pytest.raises(PalaestraError) as many:
        client.step(episode.episode_id, t.Action(message=t.Message("assistant", "", tool_calls=calls)))
    assert "at most 64" in many.value.message
    assert client.step(episode.episode_id, "apple").infra_failure is None  # the episode goes on
    client.close(episode.episode_id)


def test_tool_argument_bounds() -> None:
    assert t.load_json_arguments(' {"a": [1, {"b": "[[["}]} ') == {"a": [1, {"b": "[[["}]}
    assert t.load_json_arguments("") == {}
    for bad, why in [(DEEP, "nested 5000 deep"), ("[1]", "JSON object"), ("{", "not valid JSON")]:
        with pytest.raises(ValueError, match=why):
            t.load_json_arguments(bad)


# ---------------------------------------------------------------- the reward contract


@pytest.mark.parametrize(
    ("env_id", "reason"),
    [("bad/nan", "value nan"), ("bad/undeclared", "'bonus' is not declared")],
)
def test_a_broken_reward_is_the_environments_bug(
    client: Client, env_id: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    [episode] = client.open(env_id, seed=1)
    with caplog.at_level(logging.ERROR, logger="palaestra.episodes"):
        step = client.step(episode.episode_id, "2")
    assert step.done and step.infra_failure is not None and not step.agents  # no reward reaches the trainer
    assert step.infra_failure.source == "environment"
    assert "broke its reward contract" in step.infra_failure.message and reason in step.infra_failure.message
    assert any("reward contract broken" in r.getMessage() for r in caplog.records)
    client.close(episode.episode_id)


def test_the_catalog_carries_reward_specs_options_and_isolation(client: Client) -> None:
    spec = client.describe("math/arithmetic-tools")
    by_name = {c.name: c for c in spec.reward_components}
    assert (by_name["format"].kind, by_name["format"].low, by_name["format"].high) == (
        t.RewardKind.FORMAT,
        -1,
        0,
    )
    assert by_name["prm"].low is None and by_name["prm"].high is None
    assert spec.options_schema is not None and "difficulty" in spec.options_schema["properties"]
    assert spec.sandbox_profiles == ("python",) and spec.isolation.startswith("python: ")
    assert client.describe("echo/text").isolation.startswith("none")
    assert client.describe("math/arithmetic").isolation.startswith("none")
    info = client.server_info()
    assert info.isolation["code/python"].startswith("python: ")
    assert info.isolation["gym/CartPole-v1"].startswith("none")


def test_format_components_never_carry_credit(client: Client) -> None:
    """One convention across plugins: FORMAT is 0 when well formed, negative otherwise."""
    for spec in client.list_envs():
        for component in spec.reward_components:
            if component.kind in (t.RewardKind.FORMAT, t.RewardKind.PENALTY):
                assert component.high is not None and component.high <= 0, (spec.id, component)


def test_unknown_environment_lists_known_ones(client: Client) -> None:
    with pytest.raises(PalaestraError) as refused_open:
        client.open("no/such-env")
    assert refused_open.value.code is grpc.StatusCode.NOT_FOUND
    assert "echo/text" in refused_open.value.message


def test_the_reward_contract_rules() -> None:
    from palaestra.server.validation import check_result

    spec = t.EnvSpec(
        id="x/y",
        description="",
        observation_space=t.ChatSpace(),
        action_space=t.ChatSpace(),
        reward_components=(
            t.RewardComponentSpec("won", t.RewardKind.OUTCOME, low=0.0, high=1.0),
            t.RewardComponentSpec("format", t.RewardKind.FORMAT),
            t.RewardComponentSpec("check.*", t.RewardKind.CHECKLIST),
        ),
    )

    def why(*components: t.RewardComponent, reward: float | None = None) -> str | None:
        return check_result(
            spec, t.StepResult.single(t.AgentResult(components=list(components), reward=reward))
        )

    c = t.RewardComponent
    assert why(c("won", t.RewardKind.OUTCOME, 1.0), c("format", t.RewardKind.FORMAT, -1.0)) is None
    assert why(c("check.a", t.RewardKind.CHECKLIST, 1.0), c("check.b", t.RewardKind.CHECKLIST, 0.0)) is None
    assert "outside its declared range [0, 1]" in str(why(c("won", t.RewardKind.OUTCOME, 1.5)))
    assert "has kind PROCESS; declared OUTCOME" in str(why(c("won", t.RewardKind.PROCESS, 1.0)))
    assert "is positive" in str(why(c("format", t.RewardKind.FORMAT, 1.0)))
    assert "weight inf" in str(why(c("won", t.RewardKind.OUTCOME, 1.0, math.inf)))
    assert "the reward is nan" in str(why(reward=math.nan))
    # A component that was not computed may hold any finite placeholder; it counts nothing.
    timeout = c("won", t.RewardKind.OUTCOME, 7.0, status=t.ComponentStatus.TIMEOUT)
    assert why(timeout) is None


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"options_schema": {"type": "array"}}, "must describe an object"),
        (
            {"options_schema": {"type": "object", "properties": {"a": {"type": "wat"}}}},
            "not a valid JSON Schema",
        ),
        ({"reward_components": (t.RewardComponentSpec("a", t.RewardKind.OUTCOME),) * 2}, "declared twice"),
        (
            {"reward_components": (t.RewardComponentSpec("a", t.RewardKind.OUTCOME, low=1, high=0),)},
            "above high",
        ),
    ],
)
def test_malformed_specs_are_refused_at_registration(change: dict[str, Any], says: str) -> None:
    from palaestra.registry import EnvRegistry, RegistrationError

    spec = t.EnvSpec(
        id="x/y", description="", observation_space=t.ChatSpace(), action_space=t.ChatSpace(), **change
    )
    with pytest.raises(RegistrationError, match=says):
        EnvRegistry().add(spec, lambda ctx: None)  # type: ignore[arg-type,return-value]


NULL_ACTIONS = {
    "ok": "ok",
    "an empty program": "```python\ndef solution(*args):\n    pass\n```",
}


@pytest.mark.parametrize(
    "env_id",
    [
        "tools/shop",
        "tools/travel",
        "tools/web-facts",
        "tools/web-shop",
        "code/python",
        "math/arithmetic",
        "echo/text",
    ],
)
@pytest.mark.parametrize("null", sorted(NULL_ACTIONS))
def test_a_null_submission_earns_nothing(client: Client, env_id: str, null: str) -> None:
    """An agent that does nothing (says "ok", submits a program that does nothing) never earns credit:
    not from checklist items, not from a database that the task leaves unchanged anyway."""
    for seed in range(6):
        [step] = client.open(env_id, seed=seed)
        total = 0.0
        for _ in range(40):
            step = client.step(step.episode_id, NULL_ACTIONS[null])
            assert step.infra_failure is None, step.infra_failure
            total += step.result.reward
            credit = [c for c in step.result.components if c.contribution > 0]
            assert not credit, (env_id, seed, credit)
            if step.done:
                break
        assert step.done and total <= 0.0, (env_id, seed, total)
        client.close(step.episode_id)


# ---------------------------------------------------------------- isolation


def test_an_environment_without_its_isolation_is_refused_at_open(
    start_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker configured (auto) but no engine: code environments are refused at open with the reason and
    the setting that would allow the weaker backend, never served silently on a weaker one."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    strict = start_server(sandbox={"pool_size": 0})
    with Client(strict.address) as client:
        with pytest.raises(PalaestraError) as error:
            client.open("code/python", seed=1)
        assert error.value.code is grpc.StatusCode.FAILED_PRECONDITION, error.value
        assert "code/python cannot be served" in error.value.message
        assert "allow_weaker_isolation" in error.value.message
        [echo] = client.open("echo", seed=1)  # environments without a sandbox are unaffected
        client.close(echo.episode_id)
    lenient = start_server(sandbox={"pool_size": 0, "allow_weaker_isolation": True})
    with Client(lenient.address) as client:
        [episode] = client.open("code/python", seed=1)
        client.close(episode.episode_id)
