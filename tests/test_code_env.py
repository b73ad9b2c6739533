"""Code episodes through the local sandbox backend: each kind of submission and its reward breakdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from code_helpers import (
    ADD_OK,
    SUM_OK_CPP,
    SUM_OK_PY,
    checklist,
    components,
    local_manager,
    make_env,
    play,
    plugin_config,
    write_task_file,
)

from palaestra.sandbox.manager import SandboxManager
from palaestra.types import ComponentStatus, RewardKind


@pytest.fixture
async def manager() -> AsyncIterator[SandboxManager]:
    m = await local_manager()
    yield m
    await m.shutdown()


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return plugin_config(write_task_file(tmp_path))


def fenced(code: str, tag: str = "python") -> str:
    return f"Here is my solution.\n```{tag}\n{code}\n```\n"


async def test_first_observation_has_instructions_and_problem(manager: SandboxManager, config: dict) -> None:
    env = make_env("code/python", manager, config, task="add")
    first = (await env.reset(seed=1)).agents["agent"]
    roles = [m.role for m in first.observation.messages]
    assert roles == ["system", "user"]
    assert "```python" in first.observation.messages[0].content
    assert "assert add(1, 2) == 3" in first.observation.messages[1].content  # public tests are shown
    assert "add(7, 8)" not in first.observation.messages[1].content  # hidden ones are not
    assert first.observation.info["hidden_tests"] == 4
    assert env.sandbox is None  # leased lazily, on the first submission
    await env.close()


async def test_correct_python_submission_gets_full_marks(manager: SandboxManager, config: dict) -> None:
    *_, final = await play(make_env("code/python", manager, config, task="add"), ADD_OK)
    assert final.terminated
    got = components(final)
    assert got["outcome.all_hidden_pass"] == 1.0
    assert got["outcome.hidden_fraction"] == 1.0
    assert got["format.code_block"] == 0.0
    assert all(checklist(final).values()), [(i.item_id, i.reason) for i in final.checklist]
    assert {c.kind for c in final.components} >= {RewardKind.OUTCOME, RewardKind.CHECKLIST, RewardKind.FORMAT}
    # The default weights: outcome 1.0 + checklist (weights sum to 1) x 0.5.
    assert final.scalar_reward == pytest.approx(1.5)


async def test_wrong_python_submission(manager: SandboxManager, config: dict) -> None:
    wrong = fenced("def add(a, b):\n    return a + b + (a == 0)\n")
    *_, final = await play(make_env("code/python", manager, config, task="add"), wrong)
    got = components(final)
    assert got["outcome.all_hidden_pass"] == 0.0
    # zero fails (off by one); rejects errors (a TypeError, not ValueError); large and odd pass.
    assert got["outcome.hidden_fraction"] == pytest.approx(2 / 4)
    items = checklist(final)
    assert items["compiles"] and items["code_extracted"] and items["within_time_limit"]
    assert not items["hidden_tests_pass"]
    assert final.info["hidden_statuses"] == ["fail", "pass", "error", "pass"]


async def test_a_null_submission_earns_nothing(manager: SandboxManager, config: dict) -> None:
    """A program that does nothing is well formed, compiles, is fast and clean: none of that is credit."""
    *_, final = await play(
        make_env("code/python", manager, config, task="add"), fenced("def add(a, b):\n    pass\n")
    )
    assert not any(checklist(final).values()), [(i.item_id, i.reason) for i in final.checklist]
    reason = next(i.reason for i in final.checklist if i.item_id == "compiles")
    assert "passed no test" in reason
    assert final.scalar_reward == 0.0
    assert components(final)["checklist"] == 0.0


async def test_slow_python_submission_times_out(manager: SandboxManager, config: dict) -> None:
    slow = fenced("def add(a, b):\n    while True:\n        pass\n")
    *_, final = await play(make_env("code/python", manager, config, task="add"), slow)
    assert components(final)["outcome.all_hidden_pass"] == 0.0
    assert set(final.info["hidden_statuses"]) == {"timeout"}
    assert not checklist(final)["within_time_limit"]


async def test_crashing_python_submission(manager: SandboxManager, config: dict) -> None:
    crash = fenced("def add(a, b):\n    return [][a]\n")
    *_, final = await play(make_env("code/python", manager, config, task="add"), crash)
    assert components(final)["outcome.hidden_fraction"] == 0.0
    assert set(final.info["hidden_statuses"]) == {"error"}


async def test_syntax_error_fails_compiles_item(manager: SandboxManager, config: dict) -> None:
    *_, final = await play(
        make_env("code/python", manager, config, task="add"), fenced("def add(a, b) return a+b")
    )
    assert components(final)["outcome.all_hidden_pass"] == 0.0
    assert not checklist(final)["compiles"]
    reason = next(i.reason for i in final.checklist if i.item_id == "compiles")
    assert "SyntaxError" in reason


async def test_missing_code_block_is_a_format_failure(manager: SandboxManager, config: dict) -> None:
    *_, final = await play(make_env("code/python", manager, config, task="add"), "I do not know.")
    assert final.terminated
    got = components(final)
    assert got["format.code_block"] == -1.0
    assert got["outcome.all_hidden_pass"] == 0.0  # a known outcome, not an error
    format_detail = next(c.detail for c in final.components if c.name == "format.code_block")
    assert "no fenced code block" in format_detail
    assert not checklist(final)["code_extracted"]
    assert final.scalar_reward == pytest.approx(-0.5)


async def test_forbidden_import_is_reported_on_the_checklist(manager: SandboxManager, config: dict) -> None:
    code = fenced("import subprocess\n" + ADD_OK.split("\n", 1)[1].rsplit("```", 1)[0])
    *_, final = await play(make_env("code/python", manager, config, task="add"), code)
    assert components(final)["outcome.all_hidden_pass"] == 1.0  # still correct
    item = next(i for i in final.checklist if i.item_id == "no_forbidden_calls")
    assert not item.passed and "import subprocess" in item.reason


async def test_configurable_forbidden_list(manager: SandboxManager, tmp_path: Path) -> None:
    config = plugin_config(
        write_task_file(tmp_path), forbidden={"python": {"imports": [], "calls": ["print"]}}
    )
    code = fenced("def add(a, b):\n    print('hi')\n    return a + b\n")
    *_, final = await play(make_env("code/python", manager, config, task="add"), code)
    item = next(i for i in final.checklist if i.item_id == "no_forbidden_calls")
    assert not item.passed and "call print()" in item.reason


async def test_python_stdio_task(manager: SandboxManager, config: dict) -> None:
    *_, final = await play(make_env("code/python", manager, config, task="pair-sum"), SUM_OK_PY)
    assert components(final)["outcome.all_hidden_pass"] == 1.0
    wrong = fenced("a, b = map(int, input().split())\nprint(a - b)\n")
    *_, final = await play(make_env("code/python", manager, config, task="pair-sum"), wrong)
    assert components(final)["outcome.hidden_fraction"] == pytest.approx(1 / 3)  # only 0 0 passes


# ---------------------------------------------------------------- C++


async def test_correct_cpp_submission(manager: SandboxManager, config: dict) -> None:
    *_, final = await play(make_env("code/cpp", manager, config, task="pair-sum"), SUM_OK_CPP)
    assert components(final)["outcome.all_hidden_pass"] == 1.0
    assert all(checklist(final).values())


async def test_wrong_cpp_submission(manager: SandboxManager, config: dict) -> None:
    wrong = '#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a-b<<"\\n";}\n'
    *_, final = await play(make_env("code/cpp", manager, config, task="pair-sum"), fenced(wrong, "cpp"))
    got = components(final)
    assert got["outcome.all_hidden_pass"] == 0.0
    assert got["outcome.hidden_fraction"] == pytest.approx(1 / 3)  # only 0 - 0 is right


async def test_cpp_compile_error_is_an_outcome(manager: SandboxManager, config: dict) -> None:
    broken = "int main() { return undefined_name; }"
    *_, final = await play(make_env("code/cpp", manager, config, task="pair-sum"), fenced(broken, "cpp"))
    assert final.terminated
    got = components(final)
    assert got["outcome.all_hidden_pass"] == 0.0
    item = next(i for i in final.checklist if i.item_id == "compiles")
    assert not item.passed and "undefined_name" in item.reason
    assert "did not compile" in final.observation.messages[-1].content


async def test_slow_and_crashing_cpp(manager: SandboxManager, config: dict) -> None:
    slow = "int main(){ volatile unsigned long x = 0; for(;;) x++; }"
    *_, final = await play(make_env("code/cpp", manager, config, task="pair-sum"), fenced(slow, "cpp"))
    assert set(final.info["hidden_statuses"]) == {"timeout"}
    assert not checklist(final)["within_time_limit"]
    crash = "#include <cstdlib>\nint main(){ int* p = nullptr; return *p + std::rand(); }"
    *_, final = await play(make_env("code/cpp", manager, config, task="pair-sum"), fenced(crash, "cpp"))
    assert components(final)["outcome.hidden_fraction"] == 0.0
    assert set(final.info["hidden_statuses"]) == {"crash"}


async def test_cpp_memory_limit(manager: SandboxManager, config: dict) -> None:
    hog = (
        "#include <vector>\n#include <iostream>\nint main(){ std::vector<char> v;"
        " for(;;) v.resize(v.size() + (64<<20)); }"
    )
    *_, final = await play(make_env("code/cpp", manager, config, task="pair-sum"), fenced(hog, "cpp"))
    assert set(final.info["hidden_statuses"]) <= {"memory", "crash"}
    assert components(final)["outcome.all_hidden_pass"] == 0.0


async def test_cpp_forbidden_call_on_checklist(manager: SandboxManager, config: dict) -> None:
    code = (
        "#include <cstdlib>\n#include <iostream>\n"
        'int main(){ std::system("true"); long long a,b; std::cin>>a>>b; std::cout<<a+b; }'
    )
    *_, final = await play(make_env("code/cpp", manager, config, task="pair-sum"), fenced(code, "cpp"))
    item = next(i for i in final.checklist if i.item_id == "no_forbidden_calls")
    assert not item.passed and "system" in item.reason


# ---------------------------------------------------------------- task selection and options


async def test_seed_picks_the_same_task(manager: SandboxManager, config: dict) -> None:
    env = make_env("code/python", manager, config)
    first = await env.reset(seed=5)
    again = await env.reset(seed=5)
    assert first.agents["agent"].observation.messages == again.agents["agent"].observation.messages
    await env.close()


async def test_unknown_option_is_refused(manager: SandboxManager, config: dict) -> None:
    with pytest.raises(ValueError, match="unknown options"):
        make_env("code/python", manager, config, options={"bogus": 1})


async def test_every_component_is_computed(manager: SandboxManager, config: dict) -> None:
    *_, final = await play(make_env("code/python", manager, config, task="add"), ADD_OK)
    assert all(c.status is ComponentStatus.OK for c in final.components)
