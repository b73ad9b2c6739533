"""The travel domain's tasks: user requests with the calls that solve them, the facts to tell and the
checks on the final database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from palaestra.plugins.tools.domains.base import StateCheck, build_checklist, money
from palaestra.plugins.tools.domains.travel.data import (
    BAG_FEE,
    DATES,
    ROUTES,
    TravelState,
    open_database,
)
from palaestra.plugins.tools.domains.travel.tools import WRITE_TOOLS, fare_price
from palaestra.plugins.tools.tasks import PlannedCall, Task, TurnPlan


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
