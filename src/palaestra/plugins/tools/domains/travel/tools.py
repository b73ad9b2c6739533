"""The travel domain's tools: what the agent can call, each enforcing the fare policy on the database."""

from __future__ import annotations

from typing import Any

from palaestra.plugins.tools.domains.travel.data import (
    BAG_FEE,
    FLEX_SURCHARGE,
    MAX_BAGS_PER_PASSENGER,
    TravelState,
)
from palaestra.plugins.tools.toolbox import INTEGER, STRING, PolicyViolation, Tool, ToolError, obj


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
