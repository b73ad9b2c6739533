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
strict = true             # a plugin that fails to load stops the server (PALAESTRA_STRICT_PLUGINS=1)

[plugins.code]            # handed to the `code` plugin's hooks as `config`
max_turns = 4

[sandbox]                 # handed to the sandbox manager
backend = "auto"
allow_weaker_isolation = false  # without Docker: refuse code envs (true: use the local backend)

[principals.alice]        # several callers, each with its token and quotas (docs/reliability.md)
token_env = "ALICE_TOKEN" # or token = "..."
max_episodes = 512
max_sandboxes = 32

[llm.judge]               # a chat endpoint that environments may use; open options name it only
base_url = "http://127.0.0.1:8000/v1"
model = "qwen"
api_key_env = "JUDGE_KEY" # a variable of the server's environment

[store]                   # the trajectory store (docs/dashboard.md); no path: no store
path = "trajectories.sqlite"

[dashboard]               # the web dashboard, on its own port, behind the same tokens
enabled = true
port = 8080
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
class PrincipalConfig:
    """One named caller: the token it authenticates with and its quotas (0: the server's defaults)."""

    token: str = ""
    token_env: str = ""  # or: the name of a variable in the server's environment holding the token
    max_episodes: int = 0
    max_sandboxes: int = 0

    def resolved_token(self, environ: Mapping[str, str] | None = None) -> str:
        if self.token:
            return self.token
        return (os.environ if environ is None else environ).get(self.token_env, "") if self.token_env else ""


MIB = 1024 * 1024


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    max_episodes: int = 4096
    max_episodes_per_client: int = 1024
    idle_timeout_s: float = 300.0  # episodes opened through the unary calls close after this idle time
    max_message_mb: int = 64  # transport limit per message; requests above 15/16 of it answer in-band
    keepalive_time_s: float = 20.0  # ping every peer this often; one silent for keepalive_timeout_s is dead
    keepalive_timeout_s: float = 10.0
    stream_idle_timeout_s: float = 900.0  # a Session stream with no request for this long is ended
    grace_s: float = 120.0  # graceful shutdown: how long in-flight calls may finish (a code grading fits)
    auth_token: str = ""  # a single token, for the principal "default" (see [principals] for several)
    max_sandboxes_per_client: int = 0  # 0: only the sandbox layer's own limits
    tls_cert: str = ""
    tls_key: str = ""
    metrics_port: int = 0  # 0: no Prometheus endpoint
    metrics_host: str = "127.0.0.1"
    env_threads: int = 32  # worker threads for synchronous environments
    plugin_modules: list[str] = field(default_factory=list)
    disabled_plugins: list[str] = field(default_factory=list)
    strict_plugins: bool = False  # [plugins] strict: plugin failures are fatal; or PALAESTRA_STRICT_PLUGINS
    plugin_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)
    principals: dict[str, PrincipalConfig] = field(default_factory=dict)  # [principals.NAME] tables
    llm: dict[str, dict[str, Any]] = field(default_factory=dict)  # [llm.NAME]: named chat endpoints
    store: dict[str, Any] = field(default_factory=dict)  # [store]: the trajectory store (palaestra.store)
    dashboard: dict[str, Any] = field(default_factory=dict)  # [dashboard]: the web dashboard

    @property
    def max_message_bytes(self) -> int:
        """The transport's limit per message (gRPC's send and receive limits)."""
        return self.max_message_mb * MIB

    @property
    def max_request_bytes(self) -> int:
        """The application's limit per request, and per reply of a vector: below the transport's, so a
        request too large is refused in-band (RESOURCE_EXHAUSTED with its request id) instead of the
        transport ending the whole stream."""
        return self.max_message_bytes * 15 // 16

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port must be between 0 and 65535, got {self.port}")
        for name in ("max_episodes", "max_episodes_per_client", "max_message_mb", "env_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"server.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("idle_timeout_s", "stream_idle_timeout_s", "keepalive_time_s", "keepalive_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"server.{name} must be positive, got {getattr(self, name)}")
        if self.grace_s < 0:
            raise ConfigError(f"server.grace_s must not be negative, got {self.grace_s}")
        tokens = [p.resolved_token() for p in self.principals.values()]
        for name, principal in self.principals.items():
            if not principal.resolved_token():
                raise ConfigError(f"principals.{name} needs a token (or a token_env naming a set variable)")
        if len(set(tokens)) != len(tokens) or (self.auth_token and self.auth_token in tokens):
            raise ConfigError("two principals share a token: each token must name one principal")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("server.tls_cert and server.tls_key must be given together")
        from palaestra.dashboard.settings import DashboardSettings
        from palaestra.store.db import StoreSettings

        try:
            StoreSettings.from_table(self.store)
            DashboardSettings.from_table(self.dashboard)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for path in (self.tls_cert, self.tls_key):
            if path and not Path(path).is_file():
                raise ConfigError(f"TLS file not found: {path}")


# Keys of [server] that map to ServerConfig fields (the plugin and sandbox fields come from other tables).
_SERVER_KEYS = {
    f.name: f
    for f in dataclasses.fields(ServerConfig)
    if f.name not in {"plugin_modules", "disabled_plugins", "plugin_config", "sandbox", "principals", "llm"}
    and f.name not in {"store", "dashboard", "strict_plugins"}
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
        elif key == "strict":
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: plugins.strict must be true or false")
            config.strict_plugins = value
        elif isinstance(value, dict):
            config.plugin_config[key] = value
        else:
            raise ConfigError(
                f"{source}: plugins.{key} must be a table ([plugins.{key}]) or modules/disable/strict"
            )


def _apply_principals_table(config: ServerConfig, table: Mapping[str, Any], source: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(PrincipalConfig)}
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: principals.{name} must be a table ([principals.{name}])")
        unknown = set(entry) - set(fields)
        if unknown:
            raise ConfigError(
                f"{source}: unknown keys {sorted(unknown)} in principals.{name}; known: {sorted(fields)}"
            )
        for key, value in entry.items():
            kind = int if fields[key].type == "int" else str
            if (
                not isinstance(value, kind)
                or isinstance(value, bool)
                or (isinstance(value, int) and value < 0)
            ):
                expected = "a non-negative int" if kind is int else "a string"
                raise ConfigError(f"{source}: principals.{name}.{key} must be {expected}")
        config.principals[name] = PrincipalConfig(**entry)


def _apply_llm_table(config: ServerConfig, table: Mapping[str, Any], source: str) -> None:
    for name, entry in table.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("base_url"), str):
            raise ConfigError(f"{source}: llm.{name} must be a table with at least base_url (and model)")
        config.llm[name] = dict(entry)


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
        unknown = set(data) - {"server", "plugins", "sandbox", "principals", "llm", "store", "dashboard"}
        if unknown:
            raise ConfigError(
                f"{path}: unknown tables {sorted(unknown)}; expected [server], [plugins], [sandbox], "
                "[principals], [llm], [store], [dashboard]"
            )
        _apply_server_table(config, data.get("server", {}), str(path))
        _apply_plugins_table(config, data.get("plugins", {}), str(path))
        config.sandbox = dict(data.get("sandbox", {}))
        _apply_principals_table(config, data.get("principals", {}), str(path))
        for principal in config.principals.values():
            principal.token = principal.resolved_token(environ)
        _apply_llm_table(config, data.get("llm", {}), str(path))
        config.store = dict(data.get("store", {}))
        config.dashboard = dict(data.get("dashboard", {}))
    from_env = {
        key: environ[ENV_PREFIX + key.upper()] for key in _SERVER_KEYS if ENV_PREFIX + key.upper() in environ
    }
    _apply_server_table(config, from_env, "environment")
    _apply_server_table(config, {k: v for k, v in (overrides or {}).items() if v is not None}, "flags")
    config.validate()
    return config
