"""Flight bookings: search, book, cancel, change flights, add bags (an SQLite database per episode).

The seed data is generated once from a fixed seed; each episode gets its own in-memory SQLite copy.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from palaestra.plugins.tools.domains.base import DatabaseDomain, StateCheck, build_checklist, money
from palaestra.plugins.tools.tasks import PlannedCall, Task, TurnPlan
from palaestra.plugins.tools.toolbox import INTEGER, STRING, PolicyViolation, Tool, ToolError, obj

SEED = 77
AIRPORTS = {"LUN": "Lunmouth", "KEV": "Kevarra", "ORA": "Oran Sands", "SAL": "Saltgrave", "TIR": "Tirrel"}
ROUTES = [("LUN", "KEV"), ("KEV", "LUN"), ("LUN", "ORA"), ("ORA", "SAL"), ("SAL", "TIR"), ("TIR", "LUN")]
DATES = ["2026-06-01", "2026-06-02", "2026-06-03"]
NAMES = [
    "Mara Quint",
    "Tobias Lee",
    "Sana Iqbal",
    "Pavel Horak",
    "Yara Costa",
    "Niall Byrne",
    "Oona Virtanen",
    "Rafael Duarte",
    "Lena Vogt",
    "Kofi Mensah",
]
FLEX_SURCHARGE = 1.25
BAG_FEE = 35.0
MAX_BAGS_PER_PASSENGER = 2

SCHEMA = """
CREATE TABLE users (user_id TEXT PRIMARY KEY, name TEXT, email TEXT UNIQUE);
CREATE TABLE flights (flight_no TEXT PRIMARY KEY, origin TEXT, destination TEXT, date TEXT, depart TEXT,
    price_economy REAL, price_business REAL, seats_economy INTEGER, seats_business INTEGER);
CREATE TABLE bookings (booking_id TEXT PRIMARY KEY, user_id TEXT, flight_no TEXT, cabin TEXT,
    passengers INTEGER, fare TEXT, status TEXT, price REAL, bags INTEGER, bag_fees REAL, refund REAL);
"""

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


def generate_rows(seed: int = SEED) -> dict[str, list[tuple[Any, ...]]]:
    rng = random.Random(seed)
    users = [
        (f"U{n + 1:02d}", name, name.lower().replace(" ", ".") + "@mail.test") for n, name in enumerate(NAMES)
    ]
    flights = []
    number = 100
    for origin, destination in ROUTES:
        for date in DATES:
            for hour in sorted(rng.sample(range(6, 21), 3)):
                number += 1
                economy = float(rng.randrange(80, 260))
                flights.append(
                    (
                        f"SK{number}",
                        origin,
                        destination,
                        date,
                        f"{hour:02d}:{rng.choice(['05', '20', '35', '50'])}",
                        economy,
                        float(round(economy * 2.6)),
                        rng.choice([0, 2, 4, 6, 9]),
                        rng.choice([0, 1, 3]),
                    )
                )
    bookings = []
    for n, user in enumerate(users):
        for k in range(2):
            flight = flights[(n * 7 + k * 11) % len(flights)]
            passengers = 1 + (n + k) % 2
            fare = "flex" if (n + k) % 2 == 0 else "basic"
            price = round(flight[5] * passengers * (FLEX_SURCHARGE if fare == "flex" else 1.0), 2)
            bookings.append(
                (
                    f"BK{1001 + 2 * n + k}",
                    user[0],
                    flight[0],
                    "economy",
                    passengers,
                    fare,
                    "confirmed",
                    price,
                    k,
                    0.0,
                    None,
                )
            )
    return {"users": users, "flights": flights, "bookings": bookings}


@dataclass
class TravelState:
    db: sqlite3.Connection
    user_id: str | None = None


def open_database(rows: dict[str, list[tuple[Any, ...]]]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.executescript(SCHEMA)
    for table, table_rows in rows.items():
        if table_rows:
            marks = ",".join("?" * len(table_rows[0]))
            db.executemany(f"INSERT INTO {table} VALUES ({marks})", table_rows)
    db.commit()
    return db


# ---------------------------------------------------------------- tools


def _one(state: TravelState, sql: str, *args: Any) -> dict[str, Any] | None:
    row = state.db.execute(sql, args).fetchone()
    return dict(row) if row is not None else None


def _flight(state: TravelState, flight_no: str) -> dict[str, Any]:
    flight = _one(state, "SELECT * FROM flights WHERE flight_no = ?", flight_no)
    if flight is None:
        raise ToolError(f"no flight {flight_no!r}")
    return flight


def _booking(state: TravelState, booking_id: str) -> dict[str, Any]:
    if state.user_id is None:
        raise PolicyViolation("verify the traveller with find_user first")
    booking = _one(state, "SELECT * FROM bookings WHERE booking_id = ?", booking_id)
    if booking is None:
        raise ToolError(f"no booking {booking_id!r}")
    if booking["user_id"] != state.user_id:
        raise PolicyViolation(f"booking {booking_id} belongs to another traveller")
    return booking


def _flex_only(booking: dict[str, Any], what: str) -> None:
    if booking["fare"] != "flex":
        raise PolicyViolation(f"booking {booking['booking_id']} has a basic fare, which cannot be {what}")
    if booking["status"] != "confirmed":
        raise ToolError(f"booking {booking['booking_id']} is {booking['status']}")


def fare_price(flight: dict[str, Any], cabin: str, passengers: int, fare: str) -> float:
    return round(flight[f"price_{cabin}"] * passengers * (FLEX_SURCHARGE if fare == "flex" else 1.0), 2)


def find_user(state: TravelState, email: str) -> dict[str, Any]:
    user = _one(state, "SELECT * FROM users WHERE email = ?", email.strip().lower())
    if user is None:
        raise ToolError(f"no traveller with email {email!r}")
    state.user_id = user["user_id"]
    ids = [
        r[0]
        for r in state.db.execute("SELECT booking_id FROM bookings WHERE user_id = ?", (user["user_id"],))
    ]
    return {**user, "booking_ids": ids}


def search_flights(state: TravelState, origin: str, destination: str, date: str) -> list[dict[str, Any]]:
    rows = state.db.execute(
        "SELECT * FROM flights WHERE origin = ? AND destination = ? AND date = ? ORDER BY depart",
        (origin.upper(), destination.upper(), date),
    )
    return [dict(r) for r in rows]


def get_booking(state: TravelState, booking_id: str) -> dict[str, Any]:
    booking = _booking(state, booking_id)
    flight = _flight(state, booking["flight_no"])
    return {**booking, "flight": flight}


def book_flight(state: TravelState, flight_no: str, cabin: str, passengers: int, fare: str) -> dict[str, Any]:
    if state.user_id is None:
        raise PolicyViolation("verify the traveller with find_user first")
    flight = _flight(state, flight_no)
    if flight[f"seats_{cabin}"] < passengers:
        raise ToolError(f"only {flight[f'seats_{cabin}']} {cabin} seats left on {flight_no}")
    last = state.db.execute("SELECT MAX(CAST(SUBSTR(booking_id, 3) AS INTEGER)) FROM bookings").fetchone()[0]
    booking_id = f"BK{int(last or 1000) + 1}"
    price = fare_price(flight, cabin, passengers, fare)
    state.db.execute(
        "INSERT INTO bookings VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (booking_id, state.user_id, flight_no, cabin, passengers, fare, "confirmed", price, 0, 0.0, None),
    )
    state.db.execute(
        f"UPDATE flights SET seats_{cabin} = seats_{cabin} - ? WHERE flight_no = ?", (passengers, flight_no)
    )
    return {"booking_id": booking_id, "flight_no": flight_no, "price": price, "fare": fare, "cabin": cabin}


def cancel_booking(state: TravelState, booking_id: str) -> dict[str, Any]:
    booking = _booking(state, booking_id)
    _flex_only(booking, "cancelled")
    refund = round(booking["price"] + booking["bag_fees"], 2)
    state.db.execute(
        "UPDATE bookings SET status = 'cancelled', refund = ? WHERE booking_id = ?", (refund, booking_id)
    )
    cabin = booking["cabin"]
    state.db.execute(
        f"UPDATE flights SET seats_{cabin} = seats_{cabin} + ? WHERE flight_no = ?",
        (booking["passengers"], booking["flight_no"]),
    )
    return {"booking_id": booking_id, "status": "cancelled", "refund": refund}


def add_bags(state: TravelState, booking_id: str, bags: int) -> dict[str, Any]:
    booking = _booking(state, booking_id)
    allowed = MAX_BAGS_PER_PASSENGER * booking["passengers"]
    if booking["bags"] + bags > allowed:
        raise PolicyViolation(f"at most {allowed} bags on booking {booking_id}; it has {booking['bags']}")
    fee = round(BAG_FEE * bags, 2)
    state.db.execute(
        "UPDATE bookings SET bags = bags + ?, bag_fees = bag_fees + ? WHERE booking_id = ?",
        (bags, fee, booking_id),
    )
    return {"booking_id": booking_id, "bags": booking["bags"] + bags, "fee": fee}


def change_flight(state: TravelState, booking_id: str, new_flight_no: str) -> dict[str, Any]:
    booking = _booking(state, booking_id)
    _flex_only(booking, "changed")
    old, new = _flight(state, booking["flight_no"]), _flight(state, new_flight_no)
    if (old["origin"], old["destination"]) != (new["origin"], new["destination"]):
        raise ToolError("a flight change must keep the route")
    cabin, passengers = booking["cabin"], booking["passengers"]
    if new[f"seats_{cabin}"] < passengers:
        raise ToolError(f"only {new[f'seats_{cabin}']} {cabin} seats left on {new_flight_no}")
    price = fare_price(new, cabin, passengers, "flex")
    difference = round(price - booking["price"], 2)
    state.db.execute(
        "UPDATE bookings SET flight_no = ?, price = ? WHERE booking_id = ?",
        (new_flight_no, price, booking_id),
    )
    state.db.execute(
        f"UPDATE flights SET seats_{cabin} = seats_{cabin} + ? WHERE flight_no = ?",
        (passengers, old["flight_no"]),
    )
    state.db.execute(
        f"UPDATE flights SET seats_{cabin} = seats_{cabin} - ? WHERE flight_no = ?",
        (passengers, new_flight_no),
    )
    return {"booking_id": booking_id, "flight_no": new_flight_no, "price": price, "difference": difference}


CABIN = {"type": "string", "enum": ["economy", "business"]}
TOOLS = (
    Tool("find_user", "Find a traveller by email and verify them.", obj({"email": STRING}), find_user),
    Tool(
        "search_flights",
        "Flights on a route and date (airport codes, YYYY-MM-DD), with per-passenger prices and seats left.",
        obj(
            {
                "origin": STRING,
                "destination": STRING,
                "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
            }
        ),
        search_flights,
    ),
    Tool(
        "get_booking",
        "A booking of the verified traveller, with its flight.",
        obj({"booking_id": STRING}),
        get_booking,
    ),
    Tool(
        "book_flight",
        "Book seats for the verified traveller.",
        obj(
            {
                "flight_no": STRING,
                "cabin": CABIN,
                "passengers": {"type": "integer", "minimum": 1, "maximum": 6},
                "fare": {"type": "string", "enum": ["basic", "flex"]},
            }
        ),
        book_flight,
    ),
    Tool(
        "cancel_booking",
        "Cancel a flex booking; refunds price and bag fees.",
        obj({"booking_id": STRING}),
        cancel_booking,
    ),
    Tool(
        "add_bags",
        "Add checked bags to a booking ($35 each).",
        obj({"booking_id": STRING, "bags": {**INTEGER, "minimum": 1, "maximum": 6}}),
        add_bags,
    ),
    Tool(
        "change_flight",
        "Move a flex booking to another flight on the same route; returns the price difference.",
        obj({"booking_id": STRING, "new_flight_no": STRING}),
        change_flight,
    ),
)
WRITE_TOOLS = ("book_flight", "cancel_booking", "add_bags", "change_flight")


# ---------------------------------------------------------------- tasks


def _call(tool: str, **arguments: Any) -> PlannedCall:
    return PlannedCall(tool, arguments)


def _booking_is(booking_id: str, column: str, value: Any) -> Any:
    def predicate(state: TravelState) -> bool:
        row = state.db.execute(
            f"SELECT {column} FROM bookings WHERE booking_id = ?", (booking_id,)
        ).fetchone()
        return row is not None and row[0] == value

    return predicate


class TaskFactory:
    def __init__(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        db = open_database(rows)
        self.users = [dict(r) for r in db.execute("SELECT * FROM users ORDER BY user_id")]
        self.flights = [dict(r) for r in db.execute("SELECT * FROM flights ORDER BY flight_no")]
        self.bookings = [dict(r) for r in db.execute("SELECT * FROM bookings ORDER BY booking_id")]
        self.next_booking = f"BK{1001 + len(self.bookings)}"
        db.close()

    def user(self, user_id: str) -> dict[str, Any]:
        return next(u for u in self.users if u["user_id"] == user_id)

    def flight(self, flight_no: str) -> dict[str, Any]:
        return next(f for f in self.flights if f["flight_no"] == flight_no)

    def task(
        self,
        task_id: str,
        email: str,
        turns: list[str],
        plans: list[TurnPlan],
        goal: str,
        checks: Sequence[StateCheck] = (),
    ) -> Task:
        return Task(
            id=task_id,
            turns=tuple(turns),
            instructions=goal,
            reference=tuple(plans),
            checklist=build_checklist(plans, _call("find_user", email=email), WRITE_TOOLS, checks),
        )

    def book(
        self, n: int, user: dict[str, Any], route: tuple[str, str], date: str, passengers: int
    ) -> Task | None:
        fare = "flex" if n % 2 == 0 else "basic"
        options = [f for f in self.flights if (f["origin"], f["destination"]) == route and f["date"] == date]
        fitting = [f for f in options if f["seats_economy"] >= passengers]
        if not fitting:
            return None
        best = min(fitting, key=lambda f: (f["price_economy"], f["depart"]))
        price = money(fare_price(best, "economy", passengers, fare))
        email = user["email"]
        origin, destination = route
        plans = [
            TurnPlan(
                (
                    _call("find_user", email=email),
                    _call("search_flights", origin=origin, destination=destination, date=date),
                    _call(
                        "book_flight",
                        flight_no=best["flight_no"],
                        cabin="economy",
                        passengers=passengers,
                        fare=fare,
                    ),
                ),
                f"Booked {best['flight_no']} ({self.next_booking}) for ${price}.",
                (self.next_booking, price),
            )
        ]
        who = "me" if passengers == 1 else f"{passengers} people"
        turns = [
            f"Hi, I'm {email}. Book the cheapest economy flight from {origin} to {destination} on {date} "
            f"for {who}, {fare} fare."
        ]
        goal = (
            f"You are {user['name']} ({email}). Book the cheapest economy {fare} fare "
            f"{origin}->{destination} "
            f"on {date} for {passengers}; ask for the booking id and price."
        )
        return self.task(f"travel-book-{n}", email, turns, plans, goal)

    def cancel(self, n: int, booking: dict[str, Any]) -> Task:
        user = self.user(booking["user_id"])
        bid = booking["booking_id"]
        refund = money(booking["price"] + booking["bag_fees"])
        plans = [
            TurnPlan(
                (
                    _call("find_user", email=user["email"]),
                    _call("get_booking", booking_id=bid),
                    _call("cancel_booking", booking_id=bid),
                ),
                f"Booking {bid} is cancelled; ${refund} will be refunded.",
                (refund,),
            )
        ]
        turns = [f"Hello, {user['email']} here. Please cancel booking {bid}."]
        checks = [
            StateCheck(
                0,
                "t0-cancelled",
                f"Is {bid} cancelled?",
                _booking_is(bid, "status", "cancelled"),
                ("t0-cancel_booking-0",),
            )
        ]
        return self.task(
            f"travel-cancel-{n}",
            user["email"],
            turns,
            plans,
            f"You are {user['name']} ({user['email']}). Cancel booking {bid}; ask the refund.",
            checks,
        )

    def refuse(self, n: int, booking: dict[str, Any]) -> Task:
        user = self.user(booking["user_id"])
        bid = booking["booking_id"]
        plans = [
            TurnPlan(
                (_call("find_user", email=user["email"]), _call("get_booking", booking_id=bid)),
                f"Booking {bid} has a basic fare, which is non-refundable, so I cannot cancel it.",
                ("basic",),
            )
        ]
        turns = [f"I'm {user['email']} and I need booking {bid} cancelled with a refund."]
        checks = [
            StateCheck(
                0, "t0-unchanged", f"Is {bid} still confirmed?", _booking_is(bid, "status", "confirmed")
            )
        ]
        return self.task(
            f"travel-refuse-{n}",
            user["email"],
            turns,
            plans,
            f"You are {user['name']} ({user['email']}). Demand to cancel {bid}.",
            checks,
        )

    def bags(self, n: int, booking: dict[str, Any]) -> Task:
        user = self.user(booking["user_id"])
        bid = booking["booking_id"]
        count = 1
        fee = money(BAG_FEE * count)
        plans = [
            TurnPlan(
                (
                    _call("find_user", email=user["email"]),
                    _call("get_booking", booking_id=bid),
                    _call("add_bags", booking_id=bid, bags=count),
                ),
                f"Added {count} bag to {bid}; the fee is ${fee}.",
                (fee,),
            )
        ]
        turns = [f"Hi, {user['email']}. Add one checked bag to booking {bid}, what does it cost?"]
        checks = [
            StateCheck(
                0,
                "t0-bags",
                f"Does {bid} have {booking['bags'] + count} bags?",
                _booking_is(bid, "bags", booking["bags"] + count),
                ("t0-add_bags-0",),
            )
        ]
        return self.task(
            f"travel-bags-{n}",
            user["email"],
            turns,
            plans,
            f"You are {user['name']} ({user['email']}). Add one bag to {bid}; ask the fee.",
            checks,
        )

    def details(self, n: int, booking: dict[str, Any]) -> Task:
        user = self.user(booking["user_id"])
        bid = booking["booking_id"]
        flight = self.flight(booking["flight_no"])
        plans = [
            TurnPlan(
                (_call("find_user", email=user["email"]), _call("get_booking", booking_id=bid)),
                f"Your flight {flight['flight_no']} leaves on {flight['date']} at {flight['depart']}.",
                (flight["depart"],),
            ),
            TurnPlan((), f"You paid ${money(booking['price'])} for it.", (money(booking["price"]),)),
        ]
        turns = [
            f"Hi, {user['email']} here. When does the flight of booking {bid} leave?",
            "Thanks! And how much did I pay for that booking?",
        ]
        return self.task(
            f"travel-details-{n}",
            user["email"],
            turns,
            plans,
            f"You are {user['name']} ({user['email']}). Ask the departure time, then the price of {bid}.",
        )

    def change(self, n: int, booking: dict[str, Any]) -> Task | None:
        user = self.user(booking["user_id"])
        bid = booking["booking_id"]
        old = self.flight(booking["flight_no"])
        later = [
            f
            for f in self.flights
            if (f["origin"], f["destination"], f["date"]) == (old["origin"], old["destination"], old["date"])
            and f["depart"] > old["depart"]
            and f["seats_economy"] >= booking["passengers"]
        ]
        if not later:
            return None
        new = later[0]
        difference = money(fare_price(new, "economy", booking["passengers"], "flex") - booking["price"])
        plans = [
            TurnPlan(
                (
                    _call("find_user", email=user["email"]),
                    _call("get_booking", booking_id=bid),
                    _call(
                        "search_flights",
                        origin=old["origin"],
                        destination=old["destination"],
                        date=old["date"],
                    ),
                    _call("change_flight", booking_id=bid, new_flight_no=new["flight_no"]),
                ),
                f"Booking {bid} is now on {new['flight_no']} at {new['depart']}; "
                f"the price difference is ${difference}.",
                (new["flight_no"], difference),
            )
        ]
        turns = [
            f"Hi, this is {user['email']}. Move booking {bid} to the next later flight that day, please."
        ]
        checks = [
            StateCheck(
                0,
                "t0-moved",
                f"Is {bid} on {new['flight_no']}?",
                _booking_is(bid, "flight_no", new["flight_no"]),
                ("t0-change_flight-0",),
            )
        ]
        return self.task(
            f"travel-change-{n}",
            user["email"],
            turns,
            plans,
            f"You are {user['name']} ({user['email']}). Move {bid} to the next later flight that day.",
            checks,
        )

    def all_tasks(self) -> list[Task]:
        flex = [b for b in self.bookings if b["fare"] == "flex"]
        basic = [b for b in self.bookings if b["fare"] == "basic"]
        tasks: list[Task | None] = []
        for n in range(12):
            route = ROUTES[n % len(ROUTES)]
            tasks.append(self.book(n, self.users[n % len(self.users)], route, DATES[n % 3], 1 + n % 2))
        booking_tasks = [t for t in tasks if t is not None][:6]
        changes = [t for t in (self.change(n, b) for n, b in enumerate(flex)) if t is not None][:4]
        return [
            *booking_tasks,
            *[self.cancel(n, b) for n, b in enumerate(flex[:4])],
            *[self.refuse(n, b) for n, b in enumerate(basic[:3])],
            *[self.bags(n, b) for n, b in enumerate(basic[3:6])],
            *[self.details(n, b) for n, b in enumerate(self.bookings[6:9])],
            *changes,
        ]


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
