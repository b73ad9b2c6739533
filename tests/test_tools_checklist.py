"""The checklist machinery, and the LLM judge and model-backed user against a stub OpenAI chat server."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from palaestra.env import EnvContext, InfraError
from palaestra.plugins.tools.chat_env import ToolChatEnv
from palaestra.plugins.tools.reference import play, policy_for
from palaestra.plugins.tools.tasks import Domain, PlannedCall, Task, TurnPlan
from palaestra.plugins.tools.toolbox import STRING, Tool, obj
from palaestra.rewards.checklist import (
    ChatEndpoint,
    ChecklistItem,
    ChecklistRun,
    JudgeContext,
    LLMJudge,
    Reply,
    ReplyContains,
    StatePredicate,
    ToolCalled,
    ToolCallRecord,
    Verdict,
    mentions,
    normalized,
    parse_verdict,
    validate,
)
from palaestra.types import (
    DEFAULT_AGENT,
    Action,
    ComponentStatus,
    Message,
    RewardComponent,
    RewardKind,
    ToolCall,
)

# ---------------------------------------------------------------- a stub OpenAI-compatible server


class StubChat(BaseHTTPRequestHandler):
    """POST /<mode>/v1/chat/completions; the mode in the path picks the behaviour."""

    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StubChat.requests.append(body)
        mode = self.path.strip("/").split("/")[0]
        if mode == "error500":
            self._send(500, b'{"error": "boom"}')
            return
        if mode == "slow":
            time.sleep(1.5)
        if mode == "notjson":
            self._send(200, b"<html>gateway</html>")
            return
        content = {
            "pass": '{"verdict": "pass", "reason": "the assistant said it"}',
            "fail": '```json\n{"verdict": "fail", "reason": "nothing was said"}\n```',
            "slow": '{"verdict": "pass", "reason": "late"}',
            "malformed": "I think it passes!",
            "badverdict": '{"verdict": "maybe", "reason": "?"}',
            "user": self._user_line(body),
        }[mode]
        reply = {"choices": [{"message": {"role": "assistant", "content": content}}]}
        self._send(200, json.dumps(reply).encode())

    @staticmethod
    def _user_line(body: dict[str, Any]) -> str:
        said = sum(1 for m in body["messages"] if m["role"] == "assistant")
        return ["Hi, please greet Ada.", "Now greet Bo.", "###STOP###"][min(said, 2)]

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the client gave up (the timeout test)
            self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def endpoint(stub_url: str, mode: str, timeout_s: float = 5.0) -> ChatEndpoint:
    return ChatEndpoint(f"{stub_url}/{mode}/v1", "stub-model", api_key="k", timeout_s=timeout_s)


# ---------------------------------------------------------------- rule judges and the run


def ctx(
    turn: int = 0,
    step: int = 1,
    calls: Sequence[ToolCallRecord] = (),
    replies: Sequence[Reply] = (),
    state: Any = None,
) -> JudgeContext:
    return JudgeContext(
        turn, step, [Message("user", "hi"), Message("assistant", "hello")], list(calls), list(replies), state
    )


def item(item_id: str, judge: Any, **kw: Any) -> ChecklistItem:
    return ChecklistItem(item_id, f"question {item_id}", judge, **kw)


def test_validate_refuses_bad_weights_duplicates_and_unknown_dependencies() -> None:
    a = item("a", ToolCalled("x"), weight=0.5)
    with pytest.raises(ValueError, match="sum to"):
        validate([a])
    with pytest.raises(ValueError, match="twice"):
        validate([a, a])
    with pytest.raises(ValueError, match="unknown item"):
        validate([item("b", ToolCalled("x"), depends_on=("zz",))])
    validate(normalized([a, item("b", ToolCalled("y"), weight=1.5)]))


def test_mentions_is_loose_about_money_but_not_about_digits() -> None:
    assert mentions("Refund: $1,045.00 today", "1045.00")
    assert mentions("refund 1045 dollars", "1045.00")
    assert mentions("it left at 07:35.", "07:35")
    assert not mentions("order O1001", "1001")
    assert not mentions("12.5", "12.50 ") or mentions("12.5", "12.50")
    assert not mentions("total 123", "23")


async def test_tool_called_matches_arguments_loosely_and_records_evidence() -> None:
    calls = [ToolCallRecord(0, 3, "get_order", {"order_id": "o1001 "}, True)]
    verdict = await ToolCalled("get_order", {"order_id": "O1001"}).judge(item("i", None), ctx(calls=calls))
    assert verdict.passed and verdict.evidence[0].step == 3 and "get_order" in verdict.evidence[0].snippet
    failed = [ToolCallRecord(0, 3, "get_order", {"order_id": "O1001"}, False, error_kind="policy")]
    assert not (await ToolCalled("get_order").judge(item("i", None), ctx(calls=failed))).passed
    other_turn = [ToolCallRecord(1, 3, "get_order", {"order_id": "O1001"}, True)]
    assert not (await ToolCalled("get_order").judge(item("i", None), ctx(calls=other_turn))).passed


async def test_dense_run_pays_each_item_at_the_step_that_satisfied_it() -> None:
    items = normalized(
        [
            item("call", ToolCalled("lookup")),
            item("db", StatePredicate(lambda s: s["done"], "done"), depends_on=("call",)),
            item("say", ReplyContains(["42"]), required=True),
        ]
    )
    run = ChecklistRun(items, "dense")
    state = {"done": False}
    first = await run.step(ctx(step=1, state=state), turn_ended=False)
    assert first.reward == 0.0 and not first.results
    calls = [ToolCallRecord(0, 2, "lookup", {}, True)]
    state["done"] = True
    second = await run.step(ctx(step=2, calls=calls, state=state), turn_ended=False)
    assert second.reward == pytest.approx(2 / 3)  # the dependency and its dependent in one step
    assert [r.item_id for r in second.results] == ["call", "db"]
    third = await run.step(ctx(step=3, calls=calls, replies=[Reply(0, 3, "It is 42.")], state=state), True)
    assert third.reward == pytest.approx(1 / 3) and not third.stop
    assert third.results[0].evidence[0].snippet == "It is 42."


async def test_sparse_run_pays_only_at_the_end_of_the_turn_and_required_failures_stop() -> None:
    items = normalized(
        [item("call", ToolCalled("lookup")), item("say", ReplyContains(["42"]), required=True)]
    )
    run = ChecklistRun(items, "sparse")
    calls = [ToolCallRecord(0, 1, "lookup", {}, True)]
    assert (await run.step(ctx(step=1, calls=calls), False)).reward == 0.0
    end = await run.step(ctx(step=2, calls=calls, replies=[Reply(0, 2, "no idea")]), True)
    assert end.reward == pytest.approx(0.5)
    assert end.stop and "say" in end.stop_reason
    failed = next(r for r in end.results if r.item_id == "say")
    assert not failed.passed and failed.status is ComponentStatus.OK
    components = end.components(scale=2.0)
    assert components[0].kind is RewardKind.CHECKLIST and components[0].contribution == pytest.approx(1.0)


async def test_unmet_dependency_fails_and_later_turns_are_not_run_at_finish() -> None:
    items = [
        *normalized([item("a", ToolCalled("x")), item("b", ToolCalled("y"), depends_on=("a",))]),
        item("later", ToolCalled("z"), turn=1),
    ]
    run = ChecklistRun(items, "dense", stop_on_required=True)
    calls = [ToolCallRecord(0, 1, "y", {}, True)]
    end = await run.step(ctx(calls=calls), True)
    b = next(r for r in end.results if r.item_id == "b")
    assert not b.passed and "depends on 'a'" in b.reason and not end.stop
    [later] = run.finish(last_turn=0)
    assert later.status is ComponentStatus.NOT_RUN and "before turn 1" in later.reason


class Exploding(ToolCalled):
    async def judge(self, item: ChecklistItem, ctx: JudgeContext) -> Verdict:
        raise RuntimeError("bug in a judge")


async def test_a_judge_that_raises_is_not_run_and_does_not_stop_the_episode() -> None:
    run = ChecklistRun([item("x", Exploding("t"), required=True)], "dense")
    end = await run.step(ctx(), True)
    [result] = end.results
    assert result.status is ComponentStatus.NOT_RUN and not end.stop
    assert [c.name for c in end.components()] == ["checklist", "checklist_not_run"]
    assert end.components()[1].status is ComponentStatus.NOT_RUN


# ---------------------------------------------------------------- the LLM judge


def test_parse_verdict() -> None:
    assert parse_verdict('{"verdict": "PASS", "reason": "ok"}') == (True, "ok")
    assert parse_verdict('```json\n{"verdict": "fail"}\n```') == (False, "")
    for bad in ('{"verdict": "maybe"}', "[1]", "pass"):
        with pytest.raises(ValueError):
            parse_verdict(bad)


async def test_llm_judge_passes_and_fails_with_reasons(stub_url: str) -> None:
    it = item("greet", None, pass_condition="the assistant greets", failure_examples=("silence",))
    StubChat.requests.clear()
    passed = await LLMJudge(endpoint(stub_url, "pass")).judge(it, ctx())
    assert passed.status is ComponentStatus.OK and passed.passed and passed.reason == "the assistant said it"
    sent = StubChat.requests[-1]
    assert sent["model"] == "stub-model" and sent["response_format"] == {"type": "json_object"}
    assert (
        "the assistant greets" in sent["messages"][1]["content"]
        and "assistant: hello" in sent["messages"][1]["content"]
    )
    failed = await LLMJudge(endpoint(stub_url, "fail")).judge(it, ctx())
    assert failed.status is ComponentStatus.OK and not failed.passed and failed.reason == "nothing was said"


@pytest.mark.parametrize("mode", ["error500", "slow", "notjson", "malformed", "badverdict"])
async def test_llm_judge_failures_are_not_run_never_fail(stub_url: str, mode: str) -> None:
    judge = LLMJudge(endpoint(stub_url, mode, timeout_s=0.3))
    run = ChecklistRun([item("greet", judge, required=True)], "dense")
    first = await run.step(ctx(step=1), False)
    assert first.reward == 0.0 and not first.results
    end = await run.step(ctx(step=2), True)
    [result] = end.results
    assert result.status is ComponentStatus.NOT_RUN and not result.passed and result.reason
    assert not end.stop  # a required item whose judge failed never ends the episode


async def test_llm_judge_with_an_unreachable_endpoint_is_not_run() -> None:
    judge = LLMJudge(ChatEndpoint("http://127.0.0.1:9/v1", "m", timeout_s=0.5))
    verdict = await judge.judge(item("x", None), ctx())
    assert verdict.status is ComponentStatus.NOT_RUN


# ---------------------------------------------------------------- a tiny domain to run episodes with judges


class GreeterDomain(Domain):
    name = "greeter"
    policy = "Greet whoever the user names, with the greet tool."
    outcome_components = ("greeted",)
    max_episode_steps = 10

    def __init__(self, judge_mode: str, stub_url: str) -> None:
        llm = LLMJudge(endpoint(stub_url, judge_mode, timeout_s=0.3))
        self._tasks = [
            Task(
                "greet-ada",
                ("Please greet Ada.", "Now greet Bo."),
                "Have Ada, then Bo greeted.",
                (
                    TurnPlan((PlannedCall("greet", {"name": "Ada"}),), "Done."),
                    TurnPlan((PlannedCall("greet", {"name": "Bo"}),), "Done too."),
                ),
                tuple(
                    normalized(
                        [
                            item("ada", ToolCalled("greet", {"name": "Ada"}), required=True),
                            item("polite", llm),
                            item("bo", ToolCalled("greet", {"name": "Bo"}), turn=1),
                        ]
                    )
                ),
            )
        ]

    def tools(self) -> Sequence[Tool]:
        return [
            Tool(
                "greet",
                "Greet someone.",
                obj({"name": STRING}),
                lambda state, name: state.append(name) or "ok",
            )
        ]

    def tasks(self) -> Sequence[Task]:
        return self._tasks

    def new_state(self, task: Task) -> list[str]:
        return []

    def outcome(self, task: Task, state: Any, ctx: JudgeContext) -> list[RewardComponent]:
        return [RewardComponent("greeted", RewardKind.OUTCOME, float(state == ["Ada", "Bo"]))]


async def test_an_episode_with_a_passing_llm_judge(stub_url: str) -> None:
    domain = GreeterDomain("pass", stub_url)
    results = await play(ToolChatEnv(domain, EnvContext("t/greeter", "e")), policy_for(domain))
    decided = {i.item_id: i for r in results for i in r.checklist}
    assert all(i.passed for i in decided.values()) and set(decided) == {"ada", "polite", "bo"}
    assert sum(r.scalar_reward for r in results) == pytest.approx(2.0)


async def test_an_episode_whose_llm_judge_times_out_still_runs_and_scores_the_rest(stub_url: str) -> None:
    domain = GreeterDomain("slow", stub_url)
    results = await play(ToolChatEnv(domain, EnvContext("t/greeter", "e")), policy_for(domain))
    decided = {i.item_id: i for r in results for i in r.checklist}
    assert decided["polite"].status is ComponentStatus.NOT_RUN
    assert decided["ada"].passed and decided["bo"].passed
    not_run = [c for r in results for c in r.components if c.name == "checklist_not_run"]
    assert not_run and all(c.status is ComponentStatus.NOT_RUN and c.contribution == 0 for c in not_run)
    assert results[-1].terminated and results[-1].info["stop_reason"] == "the user is done"


# ---------------------------------------------------------------- the model-backed simulated user


async def test_a_model_backed_user_drives_the_conversation(stub_url: str) -> None:
    domain = GreeterDomain("pass", stub_url)
    config = {"user_model": {"base_url": f"{stub_url}/user/v1", "model": "user-sim"}}
    env = ToolChatEnv(domain, EnvContext("t/greeter", "e", config=config))
    results = await play(env, policy_for(domain))
    users = [m.content for r in results for m in r.observation.messages if m.role == "user"]
    assert users[0] == "Hi, please greet Ada." and users[1] == "Now greet Bo."
    assert results[-1].terminated


async def test_a_failing_user_model_is_an_infrastructure_failure(stub_url: str) -> None:
    domain = GreeterDomain("pass", stub_url)
    config = {"user_model": {"base_url": f"{stub_url}/error500/v1"}}
    env = ToolChatEnv(domain, EnvContext("t/greeter", "e", config=config))
    with pytest.raises(InfraError):
        await env.reset()


async def test_options_override_the_config_per_episode(stub_url: str) -> None:
    domain = GreeterDomain("pass", stub_url)
    context = EnvContext(
        "t/greeter", "e", config={"checklist_mode": "dense"}, options={"checklist_mode": "sparse"}
    )
    env = ToolChatEnv(domain, context)
    await env.reset()
    greet = Action(message=Message("assistant", tool_calls=[ToolCall("greet", '{"name": "Ada"}')]))
    called = (await env.step({DEFAULT_AGENT: greet})).agents[DEFAULT_AGENT]
    assert env.settings.checklist_mode == "sparse"
    assert [c.value for c in called.components if c.name == "checklist"] == [0.0]  # sparse: nothing yet
    replied = (await env.step({DEFAULT_AGENT: Action(text="Hello Ada!")})).agents[DEFAULT_AGENT]
    assert [c.value for c in replied.components if c.name == "checklist"] == [pytest.approx(1.0)]
