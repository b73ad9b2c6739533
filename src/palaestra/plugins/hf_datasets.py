"""Records from local Hugging Face `datasets` files (JSONL/JSON, Parquet, CSV), for the code and math
plugins' task loaders. Not a plugin: a helper they share.

A dataset entry in a plugin's configuration names the files and how their columns map onto the record
format the plugin reads::

    [[plugins.math.datasets]]
    id = "my-gsm8k"
    path = "/data/gsm8k/train-*.parquet"    # a file, a glob or a folder
    format = "gsm8k"
    columns = {question = "query", answer = "response"}   # record field = the dataset's column
    split = "train"                          # default "train"
    limit = 1000                             # optional: the first N rows

Columns named in `json_columns` hold JSON text and are decoded (APPS keeps its tests as a JSON string).
Only local files are read (no download). Needs the `datasets` package (`palaestra[store]`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
ENTRY_KEYS = ("path", "format", "columns", "json_columns", "split", "limit", "builder")


def uses_datasets(entry: Mapping[str, Any]) -> bool:
    """Whether an entry must be read through `datasets` (Parquet/CSV, folders, globs, column maps)."""
    path = str(entry.get("path", ""))
    simple_jsonl = path.endswith(".jsonl") and not any(c in path for c in "*?[")
    return not simple_jsonl or any(k in entry for k in ENTRY_KEYS if k not in ("path", "format"))


def _builder(entry: Mapping[str, Any], files: list[str]) -> str:
    if "builder" in entry:
        return str(entry["builder"])
    suffixes = {BUILDERS.get(Path(f).suffix) for f in files}
    if len(suffixes) != 1 or None in suffixes:
        raise ValueError(
            f"cannot tell the file type of {entry['path']!r} (one of {', '.join(BUILDERS)}); set builder"
        )
    return str(suffixes.pop())


def _files(path: str) -> list[str]:
    base = Path(path)
    if base.is_dir():
        found = sorted(str(p) for p in base.iterdir() if p.suffix in BUILDERS)
    elif any(c in path for c in "*?["):
        found = sorted(
            str(p) for p in Path(base.anchor or ".").glob(str(base.relative_to(base.anchor or ".")))
        )
    else:
        found = [path] if base.is_file() else []
    if not found:
        raise ValueError(f"no dataset files at {path!r}")
    return found


def read_records(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of a dataset entry as records with the entry's column names mapped. Raises ValueError
    naming what is wrong (missing files, columns, package)."""
    try:
        import datasets
    except ImportError:
        raise ValueError(
            "reading Parquet/CSV datasets needs the datasets package: pip install 'palaestra[store]'"
        ) from None
    if "path" not in entry:
        raise ValueError(f"a dataset entry needs a path: {dict(entry)}")
    files = _files(str(entry["path"]))
    split = str(entry.get("split", "train"))
    table = datasets.load_dataset(
        _builder(entry, files), data_files={split: files}, split=split, keep_in_memory=True
    )
    columns: Mapping[str, str] = entry.get("columns", {})
    missing = sorted(set(columns.values()) - set(table.column_names))
    if missing:
        raise ValueError(f"{entry['path']}: no columns {missing}; the dataset has {table.column_names}")
    decode = set(entry.get("json_columns", ()))
    limit = int(entry.get("limit", 0)) or len(table)
    records = []
    for number, row in enumerate(table.select(range(min(limit, len(table)))), start=1):
        record = dict(row)
        for column in decode:
            if isinstance(record.get(column), str):
                try:
                    record[column] = json.loads(record[column])
                except json.JSONDecodeError as exc:
                    where = f"{entry['path']} row {number}"
                    raise ValueError(f"{where}: column {column!r} is not JSON: {exc}") from None
        for field, column in columns.items():
            record[field] = record[column]
        records.append(record)
    return records
