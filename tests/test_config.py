"""Configuration from TOML, environment variables and flags, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from palaestra.server.config import ConfigError, load_config


def test_layers_override_in_order(tmp_path: Path) -> None:
    path = tmp_path / "palaestra.toml"
    path.write_text(
        "[server]\nport = 6000\nmax_episodes = 10\n"
        '[plugins]\ndisable = ["gym"]\n[plugins.code]\nmax_turns = 3\n'
        '[sandbox]\nbackend = "local"\n'
    )
    config = load_config(path, overrides={"max_episodes": 20}, environ={"PALAESTRA_PORT": "7000"})
    assert config.port == 7000 and config.max_episodes == 20
    assert config.disabled_plugins == ["gym"]
    assert config.plugin_config == {"code": {"max_turns": 3}}
    assert config.sandbox == {"backend": "local"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown key server.prot"),
        ('[server]\nport = "abc"\n', "port must be int"),
        ("[server]\nport = 99999\n", "between 0 and 65535"),
        ("[servr]\n", "unknown tables"),
        ("[server\n", "invalid TOML"),
        ('[server]\ntls_cert = "/nope.pem"\n', "given together"),
    ],
)
def test_invalid_configuration_is_explained(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_bad_environment_variable() -> None:
    with pytest.raises(ConfigError, match="environment: max_episodes must be int"):
        load_config(environ={"PALAESTRA_MAX_EPISODES": "many"})
