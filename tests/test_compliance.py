"""The compliance suite (`palaestra.testing`) over every built-in environment, through a real server,
and proof that it fails a bad plugin: one that never ends, ignores its seed, emits NaN, crashes on
hostile tool arguments, or breaks on a second close."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from palaestra.agents.client import Client
from palaestra.pluginmanager import load_plugins
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig
from palaestra.testing import ComplianceError, ComplianceSuite, compliance

BAD = "bad_plugin_for_tests"


class TestBuiltinEnvironments(ComplianceSuite):
    """Every environment the installed plugins register (the suite's default)."""

    server_config = {"sandbox": {"allow_weaker_isolation": True}}


@pytest.fixture(scope="module")
def bad_server() -> Iterator[ServerThread]:
    with ServerThread(ServerConfig(port=0, plugin_modules=[BAD])) as server:
        yield server


@pytest.fixture
def bad_client(bad_server: ServerThread) -> Iterator[Client]:
    with Client(bad_server.address) as client:
        yield client


def test_a_good_environment_passes_every_check(bad_client: Client) -> None:
    outcomes = compliance.run_checks(bad_client, load_plugins([BAD]), "bad/good")
    assert outcomes == dict.fromkeys(outcomes, ""), outcomes


@pytest.mark.parametrize(
    ("env_id", "check", "says"),
    [
        ("bad/endless", compliance.check_ends_by_itself, "the server truncated it"),
        ("bad/endless-unbounded", compliance.check_ends_by_itself, "did not end within 1000"),
        ("bad/seedless", compliance.check_seeds_reproduce, "two episodes with seed 11"),
        ("bad/nan", compliance.check_rewards_declared, "reward contract"),
        ("bad/undeclared", compliance.check_rewards_declared, "is not declared"),
        ("bad/json", compliance.check_malformed_actions, "infrastructure failure"),
        ("bad/wrong-agents", compliance.check_open_and_close, "names agents"),
    ],
)
def test_each_check_fails_the_plugin_that_breaks_it(
    bad_client: Client, env_id: str, check: Callable[[Client, str], None], says: str
) -> None:
    with pytest.raises(ComplianceError, match=says):
        check(bad_client, env_id)


def test_close_twice_is_caught_in_process() -> None:
    with pytest.raises(ComplianceError, match="second close"):
        compliance.check_close_idempotent(load_plugins([BAD]), "bad/close-twice")
