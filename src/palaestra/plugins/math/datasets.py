"""Math problems from local Hugging Face `datasets` files (Parquet, JSONL, CSV) in the formats the
math plugin reads (gsm8k, math, qa), with the dataset's columns mapped onto the fields they need::

    [[plugins.math.datasets]]
    id = "numina-sample"
    path = "/data/numina/train.parquet"
    format = "math"
    columns = {problem = "question", solution = "cot"}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from palaestra.plugins.hf_datasets import read_records
from palaestra.plugins.math.tasks import RECORD_PARSERS, DatasetError, Task


def load_dataset(entry: Mapping[str, Any], fmt: str) -> list[Task]:
    """The problems of one dataset entry."""
    if fmt not in RECORD_PARSERS:
        raise DatasetError(f"unknown dataset format {fmt!r}; known: {', '.join(RECORD_PARSERS)}")
    try:
        records = read_records(entry)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    tasks: list[Task] = []
    for number, record in enumerate(records, start=1):
        try:
            tasks.append(RECORD_PARSERS[fmt](record, len(tasks)))
        except (KeyError, TypeError, DatasetError) as exc:
            raise DatasetError(f"{entry['path']} row {number}: not a {fmt} record: {exc}") from exc
    if not tasks:
        raise DatasetError(f"{entry['path']}: no records")
    return tasks
