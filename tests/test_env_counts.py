"""`palaestra envs` ends with counts per family and per plugin, against a real server."""

from __future__ import annotations

import re
import subprocess
import sys

from palaestra.agents.client import Client


def test_envs_counts_families_and_plugins(server_address: str, client: Client) -> None:
    specs = client.list_envs()
    listing = subprocess.run(
        [sys.executable, "-m", "palaestra", "envs", "--address", server_address],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "400", "PATH": ""},
    )
    assert listing.returncode == 0, listing.stderr
    summary = " ".join(listing.stdout.split())
    assert f"{len(specs)} environments listed." in summary
    gym_count = sum(spec.id.startswith("gym/") for spec in specs)
    assert re.search(rf"Per family: .*\bgym {gym_count}\b", summary)
    echo_plugin = sum(spec.plugin == "echo" for spec in specs)
    assert re.search(rf"Per plugin: .*\becho {echo_plugin}\b", summary)
