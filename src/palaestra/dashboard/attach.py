"""Attaching the trajectory store and the dashboard to a server, as its configuration asks.

`PalaestraServer` calls `attach(server)` once, after building its runtime, and `await extras.stop()`
after closing its episodes at shutdown (so the episodes closed by the shutdown are recorded too).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from palaestra.dashboard.settings import DashboardSettings
from palaestra.server.config import ConfigError
from palaestra.store.db import StoreSettings
from palaestra.store.recorder import StoreRecorder

log = logging.getLogger("palaestra.dashboard")


@dataclass
class Extras:
    recorder: StoreRecorder | None = None
    dashboard: Any = None  # palaestra.dashboard.app.Dashboard

    async def stop(self) -> None:
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self.recorder is not None:
            self.recorder.close()


def attach(server: Any) -> Extras:
    """Register the store recorder (`[store] path`) and the dashboard (`[dashboard] enabled`) with the
    server's plugin manager; the dashboard starts serving on `palaestra_server_started`."""
    extras = Extras()
    store = StoreSettings.from_table(server.config.store)
    if store.path:
        try:
            extras.recorder = StoreRecorder(store)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"store.path {store.path!r}: cannot open the trajectory store: {exc}") from None
        server.plugins.pm.register(extras.recorder, name="palaestra-store")
        server.runtime.record_trajectories = True
        log.info("recording episodes to %s", store.path)
    settings = DashboardSettings.from_table(server.config.dashboard)
    if settings.enabled:
        from palaestra.dashboard.app import Dashboard

        extras.dashboard = Dashboard(server, settings, store.path)
        server.plugins.pm.register(extras.dashboard, name="palaestra-dashboard")
    return extras
