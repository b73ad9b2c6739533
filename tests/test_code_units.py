"""Pure parts of the code plugin: extraction, loaders, static checks, reward arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palaestra.plugins.code.checks import DEFAULT_FORBIDDEN, violations
from palaestra.plugins.code.extract import extract_code
from palaestra.plugins.code.grader import GradeReport, TestOutcome
from palaestra.plugins.code.languages import get_language
from palaestra.plugins.code.loaders import humaneval_record, load_file, mbpp_record, stdio_record
from palaestra.plugins.code.rewards import RewardConfig, gated_process_component, outcome_components
from palaestra.plugins.code.supervisor import decode_value, encode_value, outputs_match
from palaestra.plugins.code.tasks import FunctionTest, IOTest, TaskFormatError, task_from_record

PY = get_language("python")
CPP = get_language("cpp")


def test_extract_last_block_of_the_language() -> None:
    text = "```python\nfirst()\n```\nthen\n```text\nsample output\n```\n```py\nsecond()\n```\n"
    assert extract_code(text, PY).code == "second()\n"
    assert extract_code(text, PY, "first").code == "first()\n"


def test_extract_prefers_tagged_then_untagged_and_ignores_other_languages() -> None:
    assert extract_code("```\nplain()\n```", PY).code == "plain()\n"
    assert extract_code("```cpp\nint main(){}\n```\n```\nx = 1\n```", CPP).code == "int main(){}\n"
    missing = extract_code("```bash\nls\n```", PY)
    assert not missing.found and "only blocks tagged otherwise" in missing.reason


def test_extract_missing_block_and_whole_mode() -> None:
    missing = extract_code("I do not know.", PY)
    assert not missing.found and "no fenced code block" in missing.reason
    assert extract_code("print(1)", PY, "whole").code == "print(1)\n"
    assert extract_code("```python\nunclosed = True\n", PY).code == "unclosed = True\n"


def test_value_codec_round_trips_plain_data_only() -> None:
    value = [
        1,
        2.5,
        "s",
        None,
        True,
        (1, 2),
        {"k": {3}},
        frozenset({4}),
        b"\x00",
        complex(1, 2),
        float("inf"),
    ]
    assert decode_value(json.loads(json.dumps(encode_value(value)))) == value
    with pytest.raises(TypeError):
        encode_value(object())


def test_output_comparison() -> None:
    assert outputs_match("1 2\n3\n", "1  2 3", "tokens", 1e-6)
    assert not outputs_match("1 2", "1 3", "tokens", 1e-6)
    assert outputs_match("0.3333333", "0.33333334", "float", 1e-6)
    assert not outputs_match("0.5", "0.6", "float", 1e-6)
    assert not outputs_match("a\n", "a", "exact", 1e-6)


def test_task_format_validation() -> None:
    with pytest.raises(TaskFormatError, match="hidden test"):
        task_from_record({"id": "x", "prompt": "p", "entry_point": "f", "public_tests": []})
    with pytest.raises(TaskFormatError, match="Python-only"):
        task_from_record({"id": "x", "prompt": "p", "languages": ["cpp"], "hidden_tests": [{"code": "1"}]})


def test_humaneval_loader_splits_check_into_tests() -> None:
    record = {
        "task_id": "HumanEval/0",
        "prompt": "def inc(x):\n    '''Add one.'''\n",
        "canonical_solution": "    return x + 1\n",
        "entry_point": "inc",
        "test": "METADATA = {}\n\ndef check(candidate):\n"
        "    assert candidate(1) == 2\n    assert candidate(-1) == 0\n",
    }
    task = humaneval_record(record)
    assert task.id == "HumanEval-0" and task.entry_point == "inc"
    assert [t.name for t in task.hidden_tests] == ["check_0", "check_1"]
    assert len(task.public_tests) == 1
    assert (
        isinstance(task.hidden_tests[1], FunctionTest) and "candidate(-1) == 0" in task.hidden_tests[1].code
    )


def test_mbpp_loader_finds_entry_point() -> None:
    record = {
        "task_id": 7,
        "text": "Write a function to square a number.",
        "code": "def square(x):\n    return x * x\n",
        "test_list": ["assert square(2) == 4", "assert square(-3) == 9", "assert set([square(1)]) == {1}"],
    }
    task = mbpp_record(record)
    assert task.entry_point == "square" and task.id == "mbpp-7"
    assert len(task.hidden_tests) == 3 and len(task.public_tests) == 1
    assert "assert square(2) == 4" in task.prompt


def test_stdio_loader_and_file_formats(tmp_path: Path) -> None:
    record = {
        "name": "echo",
        "description": "Echo it.",
        "tests": {"input": ["a\n", "b\n"], "output": ["a\n", "b\n"]},
    }
    task = stdio_record(record)
    assert [t.name for t in task.hidden_tests] == ["hidden_0", "hidden_1"]
    assert isinstance(task.public_tests[0], IOTest) and task.languages == ("python", "cpp")
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert load_file(path, "stdio")[0].id == "echo"
    with pytest.raises(TaskFormatError):
        load_file(path, "unknown-format")


def test_forbidden_scans() -> None:
    rules = DEFAULT_FORBIDDEN["python"]
    code = "import os\nfrom subprocess import run\nos.system('ls')\nx = eval('1')\n"
    assert violations(code, "python", rules) == [
        "call eval()",
        "call os.system()",
        "from subprocess import ...",
    ]
    assert violations("import math\nprint(math.pi)\n", "python", rules) == []
    cpp = '#include <unistd.h>\n// system("x")\nint main(){ fork(); std::string s = "kill("; }'
    assert violations(cpp, "cpp", DEFAULT_FORBIDDEN["cpp"]) == ["#include <unistd.h>", "call fork()"]


def report(*statuses: str) -> GradeReport:
    return GradeReport([TestOutcome(f"t{i}", s) for i, s in enumerate(statuses)])


def test_outcome_and_gated_components() -> None:
    config = RewardConfig.from_config({"fraction_weight": 0.5}, {"gated": True, "gate_threshold": 0.5})
    all_pass, fraction = outcome_components(report("pass", "fail"), config)
    assert (all_pass.value, fraction.value, fraction.weight) == (0.0, 0.5, 0.5)
    assert gated_process_component([0.5, 0.5], 0.5, config).value == 1.0
    assert gated_process_component([0.5, 0.5], 0.25, config).value == 0.0
    assert gated_process_component([0.5, -1.0], 0.25, config).value == -0.5  # a shut gate keeps losses
    with pytest.raises(ValueError, match="unknown reward settings"):
        RewardConfig.from_config({"bogus": 1})
