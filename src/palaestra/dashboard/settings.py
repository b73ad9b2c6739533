"""The `[dashboard]` table of the server configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DashboardSettings:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (tests)
    play_idle_timeout_s: float = 1800.0  # episodes opened from the play page close after this idle time
    results: list[str] = field(default_factory=list)  # tournament results files (JSONL) for leaderboards

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> DashboardSettings:
        settings = cls()
        for key, value in table.items():
            if key not in settings.__dict__:
                raise ValueError(
                    f"unknown key dashboard.{key}; known keys: {', '.join(sorted(settings.__dict__))}"
                )
            expected = type(getattr(settings, key))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
                raise ValueError(f"dashboard.{key} must be {expected.__name__}, got {value!r}")
            if expected is list and not all(isinstance(v, str) for v in value):
                raise ValueError(f"dashboard.{key} must be a list of strings")
            setattr(settings, key, value)
        if not 0 <= settings.port <= 65535:
            raise ValueError(f"dashboard.port must be between 0 and 65535, got {settings.port}")
        if settings.play_idle_timeout_s <= 0:
            raise ValueError("dashboard.play_idle_timeout_s must be positive")
        return settings
