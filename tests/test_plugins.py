"""Plugin discovery: entry points, extra modules, disabling, duplicate ids, a separately installed plugin;
failures reported (and fatal under strict plugins); the client-side hooks; the Env base classes."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from palaestra import ChatSpace, EnvSpec
from palaestra.agents.client import Client, PalaestraError
from palaestra.pluginmanager import PluginError, Plugins, PluginState, client_plugins, load_plugins
from palaestra.registry import EnvRegistry, RegistrationError

ROOT = Path(__file__).resolve().parent.parent


def test_builtin_plugins_are_found_through_entry_points() -> None:
    plugins = load_plugins()
    assert {"echo", "gym"} <= set(plugins.loaded)
    assert plugins.envs.get("echo").spec.plugin == "echo"
    assert "echo" in plugins.loaded["echo"].environments
    assert plugins.envs.get("echo/text").spec.id == "echo/text"  # the former id still resolves
    # verifiers pins packages the project's venv cannot share (mcp==2.0.0): there its plugin is
    # unavailable (it serves from a venv of its own, tests/test_plugin_verifiers.py); nothing else may fail
    failures = {name: failure.state for name, failure in plugins.failures.items()}
    assert failures in ({}, {"verifiers_envs": PluginState.UNAVAILABLE}), plugins.failures


def test_disable_by_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALAESTRA_DISABLE_PLUGINS", "echo, gym, code, math, games, tools")
    plugins = load_plugins()
    assert "echo" not in plugins.loaded and "echo" not in plugins.envs


def test_extra_module_plugin() -> None:
    plugins = load_plugins(extra_modules=["plugin_for_tests"], disabled=["code", "math", "games", "tools"])
    assert plugins.envs.get("test/crash").spec.plugin == "plugin_for_tests"
    # A module that is also an installed entry point is loaded once, under the entry point's name.
    again = load_plugins(["palaestra.plugins.echo"], ["code", "math", "games", "tools"])
    assert "echo" in again.loaded and "palaestra.plugins.echo" not in again.loaded
    with pytest.raises(PluginError, match="cannot import plugin module 'no_such_module_here'"):
        load_plugins(["no_such_module_here"], ["code", "math", "games", "tools"])


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


# ---------------------------------------------------------------- failures are visible, and fatal when strict


def _tests_env() -> dict[str, str]:
    """A subprocess environment that finds the tests' plugin modules, with strict plugins off."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "COLUMNS": "220"}
    env.pop("PALAESTRA_STRICT_PLUGINS", None)
    return env


QUIET = ["--disable-plugin", "code", "--disable-plugin", "math", "--disable-plugin", "tools"]


def _palaestra(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palaestra", *args],
        capture_output=True,
        text=True,
        env={**_tests_env(), **env},
        timeout=120,
    )


def test_a_plugin_whose_registration_raises_is_not_served() -> None:
    import broken_plugin_for_tests as broken

    plugins = load_plugins(["broken_plugin_for_tests"], ["code", "math", "games", "tools"], strict=False)
    failure = plugins.failures["broken_plugin_for_tests"]
    assert failure.state is PluginState.FAILED and failure.stage == "register"
    assert "failed on purpose" in failure.error
    assert "broken_plugin_for_tests" not in plugins.loaded
    assert "broken/half-registered" not in plugins.envs and "broken/judge" not in plugins.rewards
    broken.CALLS.clear()
    plugins.hook.palaestra_scripted_policy(spec=plugins.envs.get("echo").spec, seed=0)
    assert broken.CALLS == [], "the failed plugin still receives hooks"


def test_strict_plugins_make_a_failure_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PluginError, match=r"broken_plugin_for_tests .register.*failed on purpose"):
        load_plugins(["broken_plugin_for_tests"], ["code", "math", "games", "tools"], strict=True)
    monkeypatch.setenv("PALAESTRA_STRICT_PLUGINS", "1")
    assert Plugins().strict
    monkeypatch.setenv("PALAESTRA_STRICT_PLUGINS", "0")
    assert not Plugins().strict


def test_a_misspelled_hook_is_refused_with_a_suggestion() -> None:
    from palaestra import hookimpl

    class Misspelled:
        @hookimpl
        def palaestra_register_enviroments(self, registry: EnvRegistry) -> None: ...

    plugins = Plugins(strict=False)
    with pytest.raises(PluginError, match="did you mean palaestra_register_environments"):
        plugins.add("misspelled", Misspelled())
    assert "misspelled" not in plugins.loaded
    plugins.pm.check_pending()  # nothing unknown was left registered


def test_an_unavailable_plugin_is_listed_not_fatal() -> None:
    from palaestra.hookspecs import PluginUnavailable, hookimpl

    class NeedsAnExtra:
        @hookimpl
        def palaestra_register_environments(self, registry: EnvRegistry, config: object) -> None:
            raise PluginUnavailable("needs the [frobnicate] extra")

    plugins = Plugins(strict=True)
    plugins.add("needs-extra", NeedsAnExtra())
    plugins.register_all()
    assert plugins.failures["needs-extra"].state is PluginState.UNAVAILABLE


def test_base_install_without_games_prints_no_import_error() -> None:
    """Without pettingzoo (a base install) the games plugin is unavailable, quietly, and says why."""
    script = (
        "import sys; sys.modules['pettingzoo'] = None\n"  # find_spec('pettingzoo') is then None
        "from palaestra.cli import main\n"
        "sys.exit(main(['plugins', '--disable-plugin', 'code', '--disable-plugin', 'math']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=_tests_env(), timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    noise = [line for line in done.stderr.splitlines() if "games" in line or "pettingzoo" in line]
    assert not noise and "Traceback" not in done.stderr, done.stderr
    [games] = [line for line in done.stdout.splitlines() if line.startswith("│ games")]
    assert "unavailable" in games and "palaestra[games]" in games


def test_failed_plugin_shown_by_palaestra_plugins() -> None:
    listing = _palaestra("plugins", "--plugin", "broken_plugin_for_tests", *QUIET)
    assert listing.returncode == 1, listing.stdout + listing.stderr
    lines = listing.stdout.splitlines()
    [start] = [i for i, line in enumerate(lines) if "broken_plugin_for_tests" in line]
    # the error cell may wrap onto continuation lines (the table is 140 columns wide)
    wrapped = itertools.takewhile(
        lambda line: line.startswith("│ ") and line.split("│")[1].isspace(), lines[start + 1 :]
    )
    error = " ".join(line.split("│")[-2].strip() for line in [lines[start], *wrapped])
    assert "failed" in lines[start] and "failed on purpose" in error, listing.stdout
    strict = _palaestra("plugins", "--plugin", "broken_plugin_for_tests", PALAESTRA_STRICT_PLUGINS="1")
    assert strict.returncode == 2 and "failed on purpose" in strict.stdout


def test_server_info_reports_failed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    from palaestra.server.app import ServerThread
    from palaestra.server.config import ServerConfig
    from palaestra.v1 import catalog_pb2

    monkeypatch.delenv("PALAESTRA_STRICT_PLUGINS", raising=False)
    config = ServerConfig(
        port=0,
        plugin_modules=["broken_plugin_for_tests"],
        disabled_plugins=["code", "math", "games", "tools"],
    )
    with ServerThread(config) as server, Client(server.address) as client:
        info = {p.name: p for p in client.server_info().plugins}
        assert client.describe("echo").id == "echo"
        assert not any(s.id.startswith("broken/") for s in client.list_envs())
    broken = info["broken_plugin_for_tests"]
    assert broken.state == catalog_pb2.PLUGIN_STATE_FAILED and "failed on purpose" in broken.error
    assert info["echo"].state == catalog_pb2.PLUGIN_STATE_LOADED and not info["echo"].error


# ---------------------------------------------------------------- client-side hooks


def test_plugin_module_scripted_policy_rendering_and_subcommand_are_found() -> None:
    base = ["--plugin", "cli_plugin_for_tests", *QUIET, "--disable-plugin", "games"]
    run = _palaestra("run", "clitest/pick-three", "--policy", "scripted", "--episodes", "2", *base)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "scripted agent" in run.stdout and "BOARD 1 0 0 1" in run.stdout and "won=1" in run.stdout
    hello = _palaestra(*base, "clitest-hello", "world")  # plugin flags before a plugin's command
    assert hello.returncode == 0 and "hello world from a plugin" in hello.stdout


def test_no_scripted_agent_is_a_clear_error_not_a_traceback() -> None:
    run = _palaestra("run", "gym/CartPole-v1", "--policy", "scripted", *QUIET)
    assert run.returncode == 2 and "no installed plugin offers a scripted agent" in run.stdout
    assert "Traceback" not in run.stderr


def test_builtin_plugins_offer_scripted_agents_through_the_hook() -> None:
    plugins = client_plugins()
    every = load_plugins()
    for env_id in ("echo", "math/arithmetic", "code/python-repair", "tools/shop", "games/tictactoe"):
        spec = every.envs.get(env_id).spec
        assert plugins.hook.palaestra_scripted_policy(spec=spec, seed=0) is not None, env_id
    assert plugins.hook.palaestra_scripted_policy(spec=every.envs.get("gym/CartPole-v1").spec, seed=0) is None


# ---------------------------------------------------------------- the Env base classes


def test_env_base_classes_enforce_themselves() -> None:
    from palaestra import AsyncEnv, Env

    class NoStep(Env):
        def reset(self, seed: object = None, options: object = None) -> None: ...  # type: ignore[override]

    with pytest.raises(TypeError, match=r"abstract method.*step"):
        NoStep()  # type: ignore[abstract]
    registry = EnvRegistry()
    with pytest.raises(RegistrationError, match="NoStep does not implement step"):
        registry.add(EnvSpec("x/no-step", "", ChatSpace(), ChatSpace()), NoStep)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be `async def`"):

        class SyncStepInAsyncEnv(AsyncEnv):
            async def reset(self, seed: object = None, options: object = None) -> None: ...  # type: ignore[override]

            def step(self, actions: object) -> None: ...  # type: ignore[override]


def test_a_reward_that_is_not_the_sum_of_its_components_is_refused() -> None:
    """One rule for the scalar reward: with components, it is their weighted sum; an environment that
    returns another value broke its reward contract (an infrastructure failure, never a reward)."""
    from palaestra.server.app import ServerThread
    from palaestra.server.config import ServerConfig

    config = ServerConfig(
        port=0, plugin_modules=["cli_plugin_for_tests"], disabled_plugins=["code", "math", "games", "tools"]
    )
    with ServerThread(config) as server, Client(server.address) as client:
        [honest] = client.open("clitest/pick-three", seed=1)
        assert client.step(honest.episode_id, {"agent": 3}).result.reward == 1.0
        [lying] = client.open("clitest/lying-reward", seed=1)
        step = client.step(lying.episode_id, {"agent": 3})
        assert step.infra_failure is not None and step.infra_failure.source == "environment"
        assert "differs from the weighted sum of its components" in step.infra_failure.message
        # An Env without `step` fails when it is made, naming the method, before any episode runs.
        with pytest.raises(PalaestraError) as no_step:
            client.open("clitest/no-step")
        assert no_step.value.code is grpc.StatusCode.INTERNAL
        assert re.search(r"abstract method '?step", no_step.value.message), no_step.value.message


def test_strict_plugins_from_the_config_file(tmp_path: Path) -> None:
    from palaestra.server.config import ConfigError, load_config

    path = tmp_path / "palaestra.toml"
    path.write_text("[plugins]\nstrict = true\n")
    assert load_config(path, environ={}).strict_plugins
    path.write_text('[plugins]\nstrict = "yes"\n')
    with pytest.raises(ConfigError, match=r"plugins\.strict must be true or false"):
        load_config(path, environ={})
