"""Code and math tasks from local Hugging Face `datasets` files (Parquet and JSONL), in the common public
shapes, served through a real server: the tasks appear, and a correct answer or program scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from palaestra.agents.client import Client
from palaestra.plugins.code.datasets import load_dataset_tasks
from palaestra.plugins.code.tasks import IOTest, TaskFormatError
from palaestra.plugins.math.datasets import load_dataset
from palaestra.plugins.math.tasks import DatasetError
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig
from palaestra.types import Action


def _parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_math_parquet_with_column_map(tmp_path: Path) -> None:
    path = _parquet(
        tmp_path / "train.parquet",
        [{"query": f"What is {a} + {a}?", "response": f"Double it. #### {2 * a}"} for a in range(5)],
    )
    tasks = load_dataset({"path": str(path), "columns": {"question": "query", "answer": "response"}}, "gsm8k")
    assert [t.answer for t in tasks] == ["0", "2", "4", "6", "8"] and tasks[3].problem == "What is 3 + 3?"


def test_math_errors_name_the_columns(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "t.parquet", [{"q": "1+1?", "a": "2"}])
    with pytest.raises(DatasetError, match=r"no columns \['question'\]"):
        load_dataset({"path": str(path), "columns": {"question": "question"}}, "qa")
    with pytest.raises(DatasetError, match="no dataset files"):
        load_dataset({"path": str(tmp_path / "missing.parquet")}, "qa")


def test_code_stdio_parquet_in_the_apps_shape(tmp_path: Path) -> None:
    rows = [
        {
            "problem_id": 7,
            "question": "Read two integers and print their sum.",
            "input_output": json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]}),
        }
    ]
    path = _parquet(tmp_path / "apps.parquet", rows)
    entry = {
        "path": str(path),
        "format": "stdio",
        "columns": {"id": "problem_id", "prompt": "question", "tests": "input_output"},
        "json_columns": ["input_output"],
    }
    [task] = load_dataset_tasks(entry)
    assert all(isinstance(t, IOTest) for t in task.hidden_tests)
    assert task.id == "7" and [(t.input, t.output) for t in task.hidden_tests if isinstance(t, IOTest)] == [
        ("1 2\n", "3\n"),
        ("5 5\n", "10\n"),
    ]


def test_code_humaneval_and_mbpp_jsonl_globs(tmp_path: Path) -> None:
    (tmp_path / "he-0.jsonl").write_text(
        json.dumps(
            {
                "task_id": "HE/0",
                "prompt": "def add(a, b):\n",
                "entry_point": "add",
                "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"
                "    assert candidate(0, 0) == 0\n",
            }
        )
        + "\n"
    )
    [task] = load_dataset_tasks({"path": str(tmp_path / "he-*.jsonl"), "format": "humaneval"})
    assert task.id == "HE-0" and len(task.hidden_tests) == 2
    mbpp = _parquet(
        tmp_path / "mbpp.parquet",
        [{"task_id": 2, "text": "Write a function sq(x).", "test_list": ["assert sq(3) == 9"]}],
    )
    [task] = load_dataset_tasks({"path": str(mbpp), "format": "mbpp"})
    assert task.entry_point == "sq"
    with pytest.raises(TaskFormatError, match="not a mbpp record"):
        load_dataset_tasks({"path": str(mbpp), "format": "mbpp", "columns": {"test_list": "text"}})


def test_a_parquet_math_dataset_is_served(tmp_path: Path) -> None:
    path = _parquet(
        tmp_path / "qa.parquet", [{"prompt": f"What is {a} times 3?", "gold": str(3 * a)} for a in range(4)]
    )
    entry = {
        "id": "pq-qa",
        "path": str(path),
        "format": "qa",
        "columns": {"question": "prompt", "answer": "gold"},
    }
    others = ["code", "tools", "sandboxes", "games", "reasoning_gym", "textarena"]
    config = ServerConfig(port=0, plugin_config={"math": {"datasets": [entry]}}, disabled_plugins=others)
    with ServerThread(config) as server, Client(server.address) as client:
        [first] = client.open("math/pq-qa", seed=1)
        problem = first.result.observation.messages[-1].content
        number = int(problem.split("What is ")[1].split(" times")[0])
        step = client.step(first.episode_id, Action(text=f"The answer is \\boxed{{{3 * number}}}."))
        assert {c.name: c.value for c in step.result.components}["correct"] == 1.0
