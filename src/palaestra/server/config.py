"""Server configuration: a TOML file, then PALAESTRA_* environment variables, then command-line flags.

```toml
[server]
host = "127.0.0.1"
port = 50051
max_episodes = 4096
auth_token = ""        # non-empty: clients must send "authorization: Bearer <token>"

[plugins]
modules = ["my_plugin"]   # extra plugin modules besides the entry points
disable = ["gym"]

[plugins.code]            # handed to the `code` plugin's hooks as `config`
max_turns = 4

[sandbox]                 # handed to the sandbox manager
backend = "auto"
```
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "PALAESTRA_"


class ConfigError(ValueError):
    """The configuration is invalid; the message says which key and what was expected."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    max_episodes: int = 4096
    max_episodes_per_client: int = 1024
    idle_timeout_s: float = 300.0  # episodes opened through the unary calls close after this idle time
    max_message_mb: int = 64
    keepalive_time_s: float = 60.0
    grace_s: float = 5.0  # graceful shutdown: how long in-flight calls may finish
    auth_token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    metrics_port: int = 0  # 0: no Prometheus endpoint
    metrics_host: str = "127.0.0.1"
    env_threads: int = 32  # worker threads for synchronous environments
    plugin_modules: list[str] = field(default_factory=list)
    disabled_plugins: list[str] = field(default_factory=list)
    plugin_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port must be between 0 and 65535, got {self.port}")
        for name in ("max_episodes", "max_episodes_per_client", "max_message_mb", "env_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"server.{name} must be at least 1, got {getattr(self, name)}")
        if self.idle_timeout_s <= 0:
            raise ConfigError(f"server.idle_timeout_s must be positive, got {self.idle_timeout_s}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("server.tls_cert and server.tls_key must be given together")
        for path in (self.tls_cert, self.tls_key):
            if path and not Path(path).is_file():
                raise ConfigError(f"TLS file not found: {path}")


# Keys of [server] that map to ServerConfig fields (the plugin and sandbox fields come from other tables).
_SERVER_KEYS = {
    f.name: f
    for f in dataclasses.fields(ServerConfig)
    if f.name not in {"plugin_modules", "disabled_plugins", "plugin_config", "sandbox"}
}


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check (and for environment variables, parse) one [server] value against its field's type."""
    expected = _SERVER_KEYS[key].type
    kind = {"int": int, "float": float, "str": str}[str(expected)]
    if isinstance(value, str) and kind is not str:
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"{source}: {key} must be {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
    return value


def _apply_server_table(config: ServerConfig, table: Mapping[str, Any], source: str) -> None:
    for key, value in table.items():
        if key not in _SERVER_KEYS:
            raise ConfigError(
                f"{source}: unknown key server.{key}; known keys: {', '.join(sorted(_SERVER_KEYS))}"
            )
        setattr(config, key, _coerce(key, value, source))


def _apply_plugins_table(config: ServerConfig, table: Mapping[str, Any], source: str) -> None:
    for key, value in table.items():
        if key in ("modules", "disable"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{source}: plugins.{key} must be a list of strings")
            target = config.plugin_modules if key == "modules" else config.disabled_plugins
            target.extend(value)
        elif isinstance(value, dict):
            config.plugin_config[key] = value
        else:
            raise ConfigError(f"{source}: plugins.{key} must be a table ([plugins.{key}]) or modules/disable")


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Build the configuration: defaults < TOML file < PALAESTRA_* variables < overrides (flags)."""
    environ = os.environ if environ is None else environ
    config = ServerConfig()
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        unknown = set(data) - {"server", "plugins", "sandbox"}
        if unknown:
            raise ConfigError(
                f"{path}: unknown tables {sorted(unknown)}; expected [server], [plugins], [sandbox]"
            )
        _apply_server_table(config, data.get("server", {}), str(path))
        _apply_plugins_table(config, data.get("plugins", {}), str(path))
        config.sandbox = dict(data.get("sandbox", {}))
    from_env = {
        key: environ[ENV_PREFIX + key.upper()] for key in _SERVER_KEYS if ENV_PREFIX + key.upper() in environ
    }
    _apply_server_table(config, from_env, "environment")
    _apply_server_table(config, {k: v for k, v in (overrides or {}).items() if v is not None}, "flags")
    config.validate()
    return config
