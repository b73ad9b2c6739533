"""Plugin discovery: entry points, extra modules, disabling, duplicate ids, a separately installed plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from palaestra import ChatSpace, EnvSpec
from palaestra.agents.client import Client
from palaestra.pluginmanager import load_plugins
from palaestra.registry import EnvRegistry, RegistrationError

ROOT = Path(__file__).resolve().parent.parent


def test_builtin_plugins_are_found_through_entry_points() -> None:
    plugins = load_plugins()
    assert {"echo", "gym"} <= set(plugins.loaded)
    assert plugins.envs.get("echo/text").spec.plugin == "echo"
    assert "echo/text" in plugins.loaded["echo"].environments


def test_disable_by_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALAESTRA_DISABLE_PLUGINS", "echo, gym, code, math, games, tools")
    plugins = load_plugins()
    assert "echo" not in plugins.loaded and "echo/text" not in plugins.envs


def test_extra_module_plugin() -> None:
    plugins = load_plugins(extra_modules=["plugin_for_tests"], disabled=["code", "math", "games", "tools"])
    assert plugins.envs.get("test/crash").spec.plugin == "plugin_for_tests"


def test_duplicate_ids_are_refused_naming_both_plugins() -> None:
    registry = EnvRegistry()
    spec = EnvSpec("x/one", "first", ChatSpace(), ChatSpace())
    registry.set_plugin("alpha", "1")
    registry.add(spec, lambda ctx: None)  # type: ignore[arg-type,return-value]
    registry.set_plugin("beta", "1")
    with pytest.raises(RegistrationError, match=r"already registered by plugin 'alpha'.*'beta'"):
        registry.add(spec, lambda ctx: None)  # type: ignore[arg-type,return-value]


def test_gym_ids_resolve_on_demand() -> None:
    plugins = load_plugins(disabled=["code", "math", "games", "tools"])
    assert "gym/MountainCarContinuous-v0" not in plugins.envs.ids()
    spec = plugins.envs.get("gym/MountainCarContinuous-v0").spec
    assert spec.max_episode_steps == 999 and spec.plugin == "gym"


def test_separately_installed_plugin_is_served(tmp_path: Path) -> None:
    """pip-install examples/hello-plugin into a folder and list what a fresh `palaestra` process serves."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT / "examples" / "hello-plugin"),
        ],
        check=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "COLUMNS": "200"}
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "palaestra",
            "envs",
            "--disable-plugin",
            "code",
            "--disable-plugin",
            "tools",
            "--disable-plugin",
            "games",
            "--disable-plugin",
            "math",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert "hello/guess-the-number" in listing
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "palaestra",
            "run",
            "hello/guess-the-number",
            "--episodes",
            "2",
            "--transcript",
            "0",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert "hello/guess-the-number results" in run


def test_any_installed_pettingzoo_env_resolves_on_demand(client: Client) -> None:
    spec = client.describe("pettingzoo/classic/leduc_holdem_v4")
    assert spec.kind.name == "TURN_BASED" and len(spec.agents) == 2
    [first] = client.open("pettingzoo/classic/leduc_holdem_v4", seed=1)
    assert first.next_agent in spec.agents
    assert first.agents[first.next_agent].observation.action_mask is not None
    client.close(first.episode_id)
