"""Code tasks from local Hugging Face `datasets` files (Parquet, JSONL, CSV) in the common public shapes:
HumanEval-style function tests, MBPP-style assert lists, and stdin/stdout test cases (including APPS's
`{"inputs": [...], "outputs": [...]}`, decoded from JSON text with `json_columns`). A `task_files` entry
that names Parquet/CSV files, a folder, a glob or a column map is read this way::

    [[plugins.code.task_files]]
    path = "/data/apps/test.parquet"
    format = "stdio"                           # native | humaneval | mbpp | stdio
    columns = {id = "problem_id", prompt = "question", tests = "input_output"}
    json_columns = ["input_output"]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from palaestra.plugins.code.loaders import FORMATS
from palaestra.plugins.code.tasks import CodeTask, TaskFormatError, task_from_record
from palaestra.plugins.hf_datasets import read_records


def _plural_io(value: Any) -> Any:
    """APPS keeps tests as {"inputs": [...], "outputs": [...]}; the stdio loader reads input/output."""
    if isinstance(value, Mapping) and "inputs" in value and "outputs" in value:
        return {"input": value["inputs"], "output": value["outputs"]}
    return value


def load_dataset_tasks(entry: Mapping[str, Any]) -> list[CodeTask]:
    """The tasks of one dataset entry (see the module docstring)."""
    fmt = str(entry.get("format", "native"))
    if fmt not in FORMATS:
        raise TaskFormatError(f"unknown task format {fmt!r}; known: {', '.join(FORMATS)}")
    try:
        records = read_records(entry)
    except ValueError as exc:
        raise TaskFormatError(str(exc)) from None
    loader = FORMATS[fmt]
    tasks = []
    for number, record in enumerate(records, start=1):
        record = {key: _plural_io(value) for key, value in record.items()}
        try:
            tasks.append(
                loader(record) if loader else task_from_record(record, f"{entry['path']} row {number}")
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TaskFormatError(f"{entry['path']} row {number}: not a {fmt} record: {exc}") from exc
    return tasks
