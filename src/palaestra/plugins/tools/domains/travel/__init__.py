"""Flight bookings: search, book, cancel, change flights, add bags (an SQLite database per episode).

One module per job: `data` (schema and seed data), `tools` (the tools and the policy they enforce),
`tasks` (the task set); this module joins them into the domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from palaestra.plugins.tools.domains.base import DatabaseDomain
from palaestra.plugins.tools.domains.travel.data import SEED, TravelState, generate_rows, open_database
from palaestra.plugins.tools.domains.travel.tasks import TaskFactory
from palaestra.plugins.tools.domains.travel.tools import TOOLS
from palaestra.plugins.tools.tasks import Task
from palaestra.plugins.tools.toolbox import Tool

POLICY = """You are the booking agent of Skylark Air.
Policy:
1. Verify the traveller with find_user (their email) before looking up, booking or changing anything, and
   only touch bookings of that traveller.
2. Fares: basic or flex. Flex costs 25% more than basic. Only flex bookings can be cancelled (full refund)
   or moved to another flight; basic fares are non-refundable and cannot be changed.
3. A flight change keeps the route and the cabin; the traveller pays or gets back the price difference.
4. Checked bags cost $35 each, at most 2 per passenger on a booking.
5. When asked for the cheapest flight, pick the cheapest one with enough seats in the cabin asked for.
6. Tell the traveller booking ids, prices, refunds and fees exactly. Explain refusals instead of
   breaking the policy."""


class TravelDomain(DatabaseDomain):
    name = "travel"
    description = (
        "Flight booking support over an SQLite database: verify the traveller, search, book, cancel, change "
        "flights and add bags under a fare policy; scored on the final database, facts told and a checklist."
    )
    policy = POLICY
    max_episode_steps = 30

    def __init__(self, seed: int = SEED) -> None:
        self._rows = generate_rows(seed)
        self._tasks = TaskFactory(self._rows).all_tasks()

    def tools(self) -> Sequence[Tool]:
        return TOOLS

    def tasks(self) -> Sequence[Task]:
        return self._tasks

    def new_state(self, task: Task) -> TravelState:
        return TravelState(open_database(self._rows))

    def snapshot(self, state: TravelState) -> Any:
        return {
            table: [list(row) for row in state.db.execute(f"SELECT * FROM {table} ORDER BY 1")]
            for table in ("users", "flights", "bookings")
        }

    def close_sync(self, state: TravelState) -> None:
        state.db.close()

    async def close_state(self, state: TravelState) -> None:
        state.db.close()
