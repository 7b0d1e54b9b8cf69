"""What the stores say of a completion, read apart from the views the services answer
with: whether it ended, what it allocated and charged."""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from decimal import Decimal

import asyncpg

from services.gateway.getcandy.ids import ORDERS
from services.order.view import read_order
from shared.db import _init_connection


def getcandy_number(order_id: str) -> str:
    return f"R{ORDERS.decode(order_id)[0]:09d}"


async def settled(stack, number: str, timeout: float = 60) -> None:
    """Every completion of the order has ended (its compensations answered, if it failed)."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while await conn.fetchval("SELECT count(*) FROM \"order\".sagas WHERE key = $1 AND ended_at IS NULL", number):
            assert asyncio.get_running_loop().time() < deadline, f"the completion of {number} did not end"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def waiting_on_step(stack, numbers: list[str], step: str, timeout: float = 30) -> None:
    """Until every one of these orders' completions has called `step` and not ended."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while await conn.fetchval("SELECT count(*) FROM \"order\".sagas WHERE key = ANY($1) AND ended_at IS NULL"
                                  " AND $2 = ANY(invoked)", numbers, step) < len(numbers):
            assert asyncio.get_running_loop().time() < deadline, f"the completions did not reach {step}"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def placed_facts(stack, number: str) -> dict:
    """What the stores say of an order: its view, what its completion allocated (net of
    releases) and whether it completed."""
    conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": "order"})
    await _init_connection(conn)
    try:
        order = await read_order(conn, number)
        completion = await conn.fetchval(
            "SELECT payload->>'request_id' FROM \"order\".events WHERE aggregate_id = $1"
            " AND type = 'order.OrderCompleted'", number)
        allocated = await conn.fetch(
            "SELECT payload FROM shipping.events WHERE aggregate_id = $1 AND type = 'shipping.StockAllocated'"
            " AND payload->>'request_id' = $2", number, completion)
        released = await conn.fetchval(
            "SELECT count(*) FROM shipping.events WHERE aggregate_id = $1 AND type = 'shipping.StockReleased'"
            " AND payload->>'request_id' = $2", number, completion)
    finally:
        await conn.close()
    units: Counter = Counter()
    for row in allocated:
        for unit in row["payload"]["units"]:
            units[unit["variant_id"]] += unit["quantity"]
    return {"order": order, "completed": completion is not None, "allocated": units, "released": released}


async def assert_charged_equals_shipped(stack, number: str) -> dict:
    facts = await placed_facts(stack, number)
    order = facts["order"]
    paid = sum((Decimal(p["amount"]) for p in order["payments"] if p["state"] not in ("failed", "invalid", "void")),
               Decimal(0))
    assert paid == order["total"], f"{number}: payments {paid} for a total of {order['total']}"
    lines = Counter()
    for line in order["line_items"]:
        lines[line["variant_id"]] += line["quantity"]
    assert facts["allocated"] == lines and facts["released"] == 0, (
        f"{number}: shipped {facts['allocated']}, charged {lines}")
    return facts


async def given_back(stack, number: str) -> dict:
    """What the order's failed completion left: gateway calls, payment states, reservations."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        calls = await conn.fetch("SELECT action, success FROM payment.gateway_calls WHERE idempotency_key LIKE $1"
                                 " ORDER BY created_at", f"{number}-%")
        reservations = await conn.fetchval("SELECT count(*) FROM cart.promotion_uses WHERE order_number = $1", number)
        failure = await conn.fetchval(
            "SELECT payload FROM \"order\".events WHERE aggregate_id = $1 AND type = 'order.CompletionFailed'"
            " ORDER BY sequence DESC LIMIT 1", number)
        locked = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE type = 'cart.CartLocked')"
            " > count(*) FILTER (WHERE type = 'cart.CartUnlocked')"
            " FROM cart.events WHERE aggregate_id = $1", number)
    finally:
        await conn.close()
    return {"calls": [(c["action"], c["success"]) for c in calls], "reservations": reservations,
            "failure": json.loads(failure) if failure else None, "cart_still_locked": locked}
