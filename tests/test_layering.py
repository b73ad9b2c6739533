"""Layering: build tools live in scripts/ and the runtime ships only what they build; the CLI's parser
imports no trainer; the travel domain is split by job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_code_builtin_data_is_what_the_build_script_writes(tmp_path: Path) -> None:
    out = tmp_path / "builtin.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_code_builtin.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    committed = ROOT / "src" / "palaestra" / "plugins" / "code" / "data" / "builtin.jsonl"
    assert out.read_bytes() == committed.read_bytes(), "rebuild with python scripts/build_code_builtin.py"
    assert not list((ROOT / "src" / "palaestra").rglob("build_*.py")), "build tools belong in scripts/"


def test_building_the_cli_parser_imports_no_trainer() -> None:
    """`palaestra` builds its parser (with every plugin's subcommands) without torch or the trainers."""
    script = (
        "import sys\n"
        "from palaestra.cli import build_parser\n"
        "build_parser()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'palaestra.agents.train_runs',"
        " 'palaestra.agents.grpo', 'palaestra.agents.ppo') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_travel_domain_modules_each_do_one_job() -> None:
    from palaestra.plugins.tools.domains.travel import TravelDomain, data, tasks, tools

    domain = TravelDomain()
    assert {t.name for t in domain.tools()} == {t.name for t in tools.TOOLS}
    assert len(domain.tasks()) == len(tasks.TaskFactory(data.generate_rows()).all_tasks()) > 0


def test_agents_never_import_the_server() -> None:
    """The agents (clients, trainers, adapters) talk to a server over gRPC; `palaestra train` gets its
    in-process server from the CLI (cli.py), so no module under agents/ imports palaestra.server."""
    import ast

    offenders = []
    for path in sorted((ROOT / "src" / "palaestra" / "agents").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith("palaestra.server")]
    assert not offenders, offenders
