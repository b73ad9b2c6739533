"""`ComplianceSuite`: the compliance checks as pytest tests, for any plugin's own test suite.

Subclass it in a test module, name the environments, and pytest runs every check on each of them
against a real server started for the class::

    from palaestra.testing import ComplianceSuite

    class TestMyEnvironments(ComplianceSuite):
        env_ids = ["hello/guess"]            # empty: every environment the server registers
        plugin_modules = ["hello_palaestra"] # modules to load besides the installed entry points

A failing check names the environment and what it did wrong (`ComplianceError`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from palaestra.agents.client import Client
from palaestra.pluginmanager import Plugins, load_plugins
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig
from palaestra.testing import compliance

_REGISTERED: dict[tuple[str, ...], list[str]] = {}


class ComplianceSuite:
    env_ids: ClassVar[list[str]] = []  # empty: every registered environment
    plugin_modules: ClassVar[list[str]] = []
    server_config: ClassVar[dict[str, Any]] = {}  # more ServerConfig fields (sandbox, plugin_config, ...)

    @classmethod
    def environments(cls) -> list[str]:
        """The ids to check (asked once per test function at collection: loading plugins is cached)."""
        if cls.env_ids:
            return list(cls.env_ids)
        key = tuple(cls.plugin_modules)
        if key not in _REGISTERED:
            _REGISTERED[key] = load_plugins(cls.plugin_modules).envs.ids()
        return _REGISTERED[key]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "env_id" in metafunc.fixturenames:
            metafunc.parametrize("env_id", type(self).environments())

    @pytest.fixture(scope="class")
    @classmethod
    def compliance_server(cls) -> Iterator[ServerThread]:
        config = ServerConfig(port=0, plugin_modules=list(cls.plugin_modules), **cls.server_config)
        with ServerThread(config) as server:
            yield server

    @pytest.fixture
    def client(self, compliance_server: ServerThread) -> Iterator[Client]:
        with Client(compliance_server.address) as connected:
            yield connected

    @pytest.fixture(scope="class")
    @classmethod
    def plugins(cls) -> Plugins:
        return load_plugins(cls.plugin_modules)

    def test_open_and_close(self, client: Client, env_id: str) -> None:
        compliance.check_open_and_close(client, env_id)

    def test_seeds_reproduce(self, client: Client, env_id: str) -> None:
        compliance.check_seeds_reproduce(client, env_id)

    def test_ends_by_itself(self, client: Client, env_id: str) -> None:
        compliance.check_ends_by_itself(client, env_id)

    def test_rewards_declared(self, client: Client, env_id: str) -> None:
        compliance.check_rewards_declared(client, env_id)

    def test_malformed_actions(self, client: Client, env_id: str) -> None:
        compliance.check_malformed_actions(client, env_id)

    def test_close_idempotent(self, plugins: Plugins, env_id: str) -> None:
        compliance.check_close_idempotent(plugins, env_id)
