"""docs/writing-a-plugin.md followed literally: its code blocks are written into an empty folder, pip
installs the folder, and the installed plugin is listed, played with its scripted agent, and passes the
compliance suite shipped in palaestra.testing (run by the plugin's own test file from the page)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "writing-a-plugin.md"
EXAMPLE = ROOT / "examples" / "hello-plugin"
pytestmark = pytest.mark.timeout(300)


def doc_files() -> dict[str, str]:
    """Every code block whose first line is `# file: PATH`, by PATH."""
    files = {}
    for body in re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), flags=re.DOTALL):
        first = body.splitlines()[0]
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = body
    return files


def test_the_page_holds_the_whole_plugin_and_the_example_is_the_same() -> None:
    files = doc_files()
    assert set(files) == {"src/hello_palaestra/__init__.py", "pyproject.toml", "tests/test_hello.py"}
    for name, body in files.items():
        assert (EXAMPLE / name).read_text() == body, f"examples/hello-plugin/{name} differs from the page"


def test_following_the_page_literally(tmp_path: Path) -> None:
    project = tmp_path / "hello-plugin"
    for name, body in doc_files().items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(body)
    site = tmp_path / "site"
    # `pip install .` from the page, into a folder of its own (the test must not change the venv).
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--target", str(site), str(project)],
        check=True,
        timeout=240,
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "COLUMNS": "200",
        "PALAESTRA_STRICT_PLUGINS": "1",
        "PALAESTRA_DISABLE_PLUGINS": "code,math,tools,games",  # only to keep the test short
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, *args], cwd=project, env=env, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    assert "hello/guess-the-number" in run("-m", "palaestra", "envs", "--tag", "example").stdout
    played = run("-m", "palaestra", "run", "hello/guess-the-number", "--episodes", "3").stdout
    assert "scripted agent" in played, played
    [table] = played.split("hello/guess-the-number results")[1:]
    assert table.count("won=1") == 3, played  # binary search always finds the number in 10 guesses
    tested = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests").stdout
    assert re.search(r"\b6 passed\b", tested), tested
