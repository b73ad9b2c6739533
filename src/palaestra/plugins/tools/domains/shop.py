"""A shop's customer service: orders, cancellations, returns, address changes (a JSON database).

Everything is generated from a fixed seed, so the database and the tasks are the same in every process.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from palaestra.plugins.tools.domains.base import DatabaseDomain, StateCheck, build_checklist, money
from palaestra.plugins.tools.tasks import PlannedCall, Task, TurnPlan
from palaestra.plugins.tools.toolbox import STRING, PolicyViolation, Tool, ToolError, obj

SEED = 2026
FIRST = [
    "Ada",
    "Bruno",
    "Chiara",
    "Dmitri",
    "Esme",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kemi",
    "Lior",
]
LAST = [
    "Moreau",
    "Okafor",
    "Lindqvist",
    "Tanaka",
    "Ferreira",
    "Novak",
    "Haddad",
    "Walsh",
    "Kowalski",
    "Reyes",
]
STREETS = ["Quarry Lane", "Mill Road", "Harbour Street", "Linden Avenue", "Orchard Way", "Canal Walk"]
CITIES = [("Brackwell", "40112"), ("Dunmore", "51230"), ("Eastleigh", "60714"), ("Fenwick", "72055")]
PRODUCTS = [
    ("SKU-101", "Enamel camping mug", 14.50),
    ("SKU-102", "Merino beanie", 29.00),
    ("SKU-103", "Cast iron skillet", 42.75),
    ("SKU-104", "Bamboo cutting board", 19.90),
    ("SKU-105", "Linen tea towel set", 24.00),
    ("SKU-106", "Brass desk lamp", 88.00),
    ("SKU-107", "Wool throw blanket", 64.30),
    ("SKU-108", "Ceramic pour-over kit", 36.20),
    ("SKU-109", "Canvas tote bag", 17.45),
    ("SKU-110", "Walnut salad servers", 22.60),
]
STATUSES = ["pending", "shipped", "delivered"]
CANCEL_REASONS = ["no longer needed", "ordered by mistake"]

POLICY = """You are the customer service agent of Hearth & Field, an online homeware shop.
Policy:
1. Before looking up or changing any order, verify the customer's identity with find_customer using the
   email address they give you. Only act on orders that belong to that customer.
2. Only pending orders can be cancelled; the refund is the order total.
3. Only delivered orders can have items returned; the refund is the price times quantity of the items.
4. The shipping address can only be changed while the order is pending.
5. Never change an order the customer did not ask you to change. If a request breaks this policy,
   explain why it cannot be done instead of doing it.
6. Tell the customer the facts they ask for (status, tracking number, totals, refunds) with exact amounts."""


def generate_database(seed: int = SEED) -> dict[str, Any]:
    rng = random.Random(seed)
    customers: dict[str, Any] = {}
    orders: dict[str, Any] = {}
    order_number = 1001
    for n in range(12):
        cid = f"C{n + 1:03d}"
        first, last = FIRST[n], LAST[n % len(LAST)]
        city, zip_code = CITIES[n % len(CITIES)]
        customers[cid] = {
            "customer_id": cid,
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}@example.com",
            "address": {
                "street": f"{rng.randint(2, 98)} {rng.choice(STREETS)}",
                "city": city,
                "zip": zip_code,
            },
            "order_ids": [],
        }
        for k in range(3):
            oid = f"O{order_number}"
            order_number += 1
            items: list[dict[str, Any]] = []
            for sku, name, price in rng.sample(PRODUCTS, rng.randint(1, 3)):
                items.append({"sku": sku, "name": name, "price": price, "quantity": rng.randint(1, 2)})
            status = STATUSES[(n + k) % 3]
            orders[oid] = {
                "order_id": oid,
                "customer_id": cid,
                "status": status,
                "items": items,
                "total": round(sum(i["price"] * i["quantity"] for i in items), 2),
                "address": dict(customers[cid]["address"]),
                "tracking": f"TRK{rng.randint(100000, 999999)}" if status != "pending" else None,
                "refund": None,
            }
            customers[cid]["order_ids"].append(oid)
    return {"customers": customers, "orders": orders}


@dataclass
class ShopState:
    db: dict[str, Any]
    customer_id: str | None = None  # who find_customer verified


# ---------------------------------------------------------------- tools


def _order(state: ShopState, order_id: str) -> dict[str, Any]:
    if state.customer_id is None:
        raise PolicyViolation("verify the customer's identity with find_customer first")
    order = state.db["orders"].get(order_id)
    if order is None:
        raise ToolError(f"no order {order_id!r}")
    if order["customer_id"] != state.customer_id:
        raise PolicyViolation(f"order {order_id} does not belong to the verified customer")
    return order


def find_customer(state: ShopState, email: str) -> dict[str, Any]:
    for customer in state.db["customers"].values():
        if customer["email"] == email.strip().lower():
            state.customer_id = customer["customer_id"]
            return {k: customer[k] for k in ("customer_id", "name", "order_ids")}
    raise ToolError(f"no customer with email {email!r}")


def get_order(state: ShopState, order_id: str) -> dict[str, Any]:
    return copy.deepcopy(_order(state, order_id))


def cancel_order(state: ShopState, order_id: str, reason: str) -> dict[str, Any]:
    order = _order(state, order_id)
    if order["status"] != "pending":
        raise PolicyViolation(f"only pending orders can be cancelled; order {order_id} is {order['status']}")
    order["status"] = "cancelled"
    order["refund"] = order["total"]
    order["cancel_reason"] = reason
    return {"order_id": order_id, "status": "cancelled", "refund": order["refund"]}


def return_items(state: ShopState, order_id: str, skus: list[str]) -> dict[str, Any]:
    order = _order(state, order_id)
    if order["status"] not in ("delivered", "return requested"):
        raise PolicyViolation(f"only delivered orders can be returned; order {order_id} is {order['status']}")
    by_sku = {i["sku"]: i for i in order["items"]}
    for sku in skus:
        if sku not in by_sku:
            raise ToolError(f"order {order_id} has no item {sku!r}")
        if by_sku[sku].get("returned"):
            raise ToolError(f"item {sku} of order {order_id} was already returned")
    refund = round(sum(by_sku[s]["price"] * by_sku[s]["quantity"] for s in set(skus)), 2)
    for sku in skus:
        by_sku[sku]["returned"] = True
    order["status"] = "return requested"
    order["refund"] = round((order["refund"] or 0) + refund, 2)
    return {"order_id": order_id, "status": order["status"], "refund": refund}


def update_address(state: ShopState, order_id: str, street: str, city: str, zip: str) -> dict[str, Any]:
    order = _order(state, order_id)
    if order["status"] != "pending":
        raise PolicyViolation(
            f"the address can only change while pending; order {order_id} is {order['status']}"
        )
    order["address"] = {"street": street, "city": city, "zip": zip}
    return {"order_id": order_id, "address": order["address"]}


TOOLS = (
    Tool(
        "find_customer",
        "Find a customer by email and verify their identity.",
        obj({"email": STRING}),
        find_customer,
    ),
    Tool("get_order", "Details of an order of the verified customer.", obj({"order_id": STRING}), get_order),
    Tool(
        "cancel_order",
        "Cancel a pending order; the total is refunded.",
        obj({"order_id": STRING, "reason": {"type": "string", "enum": CANCEL_REASONS}}),
        cancel_order,
    ),
    Tool(
        "return_items",
        "Return items (by SKU) of a delivered order; their price times quantity is refunded.",
        obj(
            {
                "order_id": STRING,
                "skus": {"type": "array", "items": STRING, "minItems": 1, "uniqueItems": True},
            }
        ),
        return_items,
    ),
    Tool(
        "update_address",
        "Change the shipping address of a pending order.",
        obj({"order_id": STRING, "street": STRING, "city": STRING, "zip": STRING}),
        update_address,
    ),
)
WRITE_TOOLS = ("cancel_order", "return_items", "update_address")


# ---------------------------------------------------------------- tasks


def _call(tool: str, **arguments: Any) -> PlannedCall:
    return PlannedCall(tool, arguments)


class TaskFactory:
    """Builds the shop's tasks from the generated database."""

    def __init__(self, db: dict[str, Any]) -> None:
        self.db = db
        self.rng = random.Random(SEED + 1)

    def orders_with(self, status: str) -> list[dict[str, Any]]:
        return [o for o in self.db["orders"].values() if o["status"] == status]

    def customer(self, order: dict[str, Any]) -> dict[str, Any]:
        return dict(self.db["customers"][order["customer_id"]])

    def task(
        self,
        task_id: str,
        order: dict[str, Any],
        turns: list[str],
        plans: list[TurnPlan],
        instructions: str,
        checks: Sequence[StateCheck] = (),
    ) -> Task:
        identify = _call("find_customer", email=self.customer(order)["email"])
        return Task(
            id=task_id,
            turns=tuple(turns),
            instructions=instructions,
            reference=tuple(plans),
            checklist=build_checklist(plans, identify, WRITE_TOOLS, checks),
            data={"order_id": order["order_id"]},
        )

    def status(self, n: int, order: dict[str, Any]) -> Task:
        c = self.customer(order)
        oid = order["order_id"]
        facts0 = (order["status"],) + ((order["tracking"],) if order["tracking"] else ())
        plans = [
            TurnPlan(
                (_call("find_customer", email=c["email"]), _call("get_order", order_id=oid)),
                f"Your order {oid} is {order['status']}"
                + (f", tracking number {order['tracking']}." if order["tracking"] else "."),
                facts0,
            ),
            TurnPlan((), f"The total of order {oid} was ${money(order['total'])}.", (money(order["total"]),)),
        ]
        turns = [
            f"Hi, my email is {c['email']}. What is the status of my order {oid}?",
            "Thanks. And what was the total of that order?",
        ]
        goal = f"You are {c['name']} ({c['email']}). Ask for the status and then the total of order {oid}."
        return self.task(f"shop-status-{n}", order, turns, plans, goal)

    def cancel(self, n: int, order: dict[str, Any]) -> Task:
        c = self.customer(order)
        oid = order["order_id"]
        reason = CANCEL_REASONS[n % 2]
        plans = [
            TurnPlan(
                (
                    _call("find_customer", email=c["email"]),
                    _call("get_order", order_id=oid),
                    _call("cancel_order", order_id=oid, reason=reason),
                ),
                f"Order {oid} is cancelled; ${money(order['total'])} will be refunded.",
                (money(order["total"]),),
            )
        ]
        turns = [f"Hello, this is {c['email']}. Please cancel order {oid}, it is {reason}."]
        checks = [
            StateCheck(
                0,
                "t0-cancelled",
                f"Is order {oid} cancelled in the database?",
                _status_is(oid, "cancelled"),
                ("t0-cancel_order-0",),
            ),
        ]
        goal = f"You are {c['name']} ({c['email']}). Cancel order {oid} because it is {reason}."
        return self.task(f"shop-cancel-{n}", order, turns, plans, goal, checks)

    def return_item(self, n: int, order: dict[str, Any]) -> Task:
        c = self.customer(order)
        oid = order["order_id"]
        item = order["items"][n % len(order["items"])]
        refund = money(item["price"] * item["quantity"])
        plans = [
            TurnPlan(
                (
                    _call("find_customer", email=c["email"]),
                    _call("get_order", order_id=oid),
                    _call("return_items", order_id=oid, skus=[item["sku"]]),
                ),
                f"The return of the {item['name']} is registered; you will get ${refund} back.",
                (refund,),
            )
        ]
        turns = [f"Hi, I'm {c['email']}. I want to return the {item['name']} from order {oid}."]
        goal = (
            f"You are {c['name']} ({c['email']}). Return the {item['name']} of order {oid}; ask the refund."
        )
        return self.task(f"shop-return-{n}", order, turns, plans, goal)

    def address(self, n: int, order: dict[str, Any]) -> Task:
        c = self.customer(order)
        oid = order["order_id"]
        city, zip_code = CITIES[(n + 2) % len(CITIES)]
        street = f"{10 + n} {STREETS[(n + 3) % len(STREETS)]}"
        plans = [
            TurnPlan(
                (
                    _call("find_customer", email=c["email"]),
                    _call("get_order", order_id=oid),
                    _call("update_address", order_id=oid, street=street, city=city, zip=zip_code),
                ),
                f"Order {oid} will now ship to {street}, {city} {zip_code}.",
                (zip_code,),
            )
        ]
        turns = [f"Hi, email {c['email']}. Please ship order {oid} to {street}, {city} {zip_code} instead."]
        goal = f"You are {c['name']} ({c['email']}). Have order {oid} shipped to {street}, {city} {zip_code}."
        return self.task(f"shop-address-{n}", order, turns, plans, goal)

    def refuse_cancel(self, n: int, order: dict[str, Any]) -> Task:
        """The customer asks to cancel a delivered order: the policy says no; a return is possible."""
        c = self.customer(order)
        oid = order["order_id"]
        plans = [
            TurnPlan(
                (_call("find_customer", email=c["email"]), _call("get_order", order_id=oid)),
                f"Order {oid} was already delivered, so it cannot be cancelled; you can return its items.",
                ("delivered",),
            )
        ]
        turns = [f"This is {c['email']}. Cancel order {oid} right now please."]
        checks = [
            StateCheck(0, "t0-unchanged", f"Is order {oid} still delivered?", _status_is(oid, "delivered")),
        ]
        goal = f"You are {c['name']} ({c['email']}). Insist on cancelling order {oid}."
        return self.task(f"shop-refuse-{n}", order, turns, plans, goal, checks)

    def status_then_cancel(self, n: int, first: dict[str, Any], second: dict[str, Any]) -> Task:
        c = self.customer(first)
        a, b = first["order_id"], second["order_id"]
        plans = [
            TurnPlan(
                (_call("find_customer", email=c["email"]), _call("get_order", order_id=a)),
                f"Order {a} is {first['status']}.",
                (first["status"],),
            ),
            TurnPlan(
                (
                    _call("get_order", order_id=b),
                    _call("cancel_order", order_id=b, reason="no longer needed"),
                ),
                f"Order {b} is cancelled and ${money(second['total'])} will be refunded.",
                (money(second["total"]),),
            ),
        ]
        turns = [
            f"Hi, my email is {c['email']}. Has order {a} arrived yet?",
            f"OK. Then please cancel my order {b}, I no longer need it.",
        ]
        checks = [
            StateCheck(
                1,
                "t1-cancelled",
                f"Is order {b} cancelled?",
                _status_is(b, "cancelled"),
                ("t1-cancel_order-0",),
            ),
        ]
        goal = f"You are {c['name']} ({c['email']}). Ask whether {a} arrived, then cancel {b} (not needed)."
        return self.task(f"shop-two-step-{n}", first, turns, plans, goal, checks)

    def all_tasks(self) -> list[Task]:
        pending, shipped, delivered = (self.orders_with(s) for s in STATUSES)
        tasks = [self.status(n, o) for n, o in enumerate(shipped[:3] + delivered[:2] + pending[:1])]
        tasks += [self.cancel(n, o) for n, o in enumerate(pending[1:5])]
        tasks += [self.return_item(n, o) for n, o in enumerate(delivered[2:6])]
        tasks += [self.address(n, o) for n, o in enumerate(pending[5:8])]
        tasks += [self.refuse_cancel(n, o) for n, o in enumerate(delivered[6:8])]
        for n, cid in enumerate(["C002", "C005", "C008"]):
            mine = [self.db["orders"][o] for o in self.db["customers"][cid]["order_ids"]]
            second = next(o for o in mine if o["status"] == "pending")
            first = next(o for o in mine if o["status"] != "pending")
            tasks.append(self.status_then_cancel(n, first, second))
        return tasks


def _status_is(order_id: str, status: str) -> Any:
    return lambda state: state.db["orders"][order_id]["status"] == status


class ShopDomain(DatabaseDomain):
    name = "shop"
    description = (
        "Customer service for an online shop: verify the customer, look up orders, cancel, return, change "
        "addresses under a written policy; scored on the final database, the facts told and a checklist."
    )
    policy = POLICY
    max_episode_steps = 30

    def __init__(self, seed: int = SEED) -> None:
        self._db_json = json.dumps(generate_database(seed))
        self._tasks = TaskFactory(json.loads(self._db_json)).all_tasks()

    def tools(self) -> Sequence[Tool]:
        return TOOLS

    def tasks(self) -> Sequence[Task]:
        return self._tasks

    def new_state(self, task: Task) -> ShopState:
        return ShopState(json.loads(self._db_json))

    def snapshot(self, state: ShopState) -> Any:
        return state.db
