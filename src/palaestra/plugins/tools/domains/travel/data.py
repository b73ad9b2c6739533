"""The travel domain's database: its schema, the seed data (generated once from a fixed seed), and the
in-memory SQLite copy each episode gets."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from typing import Any

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
