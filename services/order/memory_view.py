"""The order view held in memory while a rebuild folds every stored event
(services/order/projections.py `fold_all`, tillstream/operations.py), then written out in bulk:
a rebuild makes no round trip per event. The same changes as the live tables
(services/order/view.py), kept in dicts."""
from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import asyncpg

from services.order.view import _COLUMN_DEFAULTS


class MemoryOrderView:
    """The view's tables as dicts: orders by number, lines by id."""

    def __init__(self) -> None:
        self.orders: dict[str, dict] = {}
        self.lines: dict[int, dict] = {}
        self._stamp: tuple[str, datetime] | None = None

    async def create(self, number: str, **row) -> None:
        if number not in self.orders:
            self.orders[number] = {"number": number, **{k: list(v) if isinstance(v, list) else v
                                                        for k, v in _COLUMN_DEFAULTS.items()}, **row}

    async def get(self, number: str, column: str):
        order = self.orders.get(number)
        return order[column] if order else None

    async def update(self, number: str, **changes) -> None:
        if number in self.orders:
            self.orders[number].update(changes)

    async def patch(self, number: str, patch: dict) -> None:
        order = self.orders.get(number)
        if order is None:
            return
        if patch["how"] in ("backordered", "placed_states"):
            order["shipments"] = _patched_shipments(order["shipments"] or [], patch)
            return
        elements, key, value = order[patch["column"]] or [], patch["key"], patch["value"]
        if patch["how"] == "merge":
            order[patch["column"]] = [{**e, **patch["with"]} if e.get(key) == value else e for e in elements]
        elif not any(e.get(key) == value for e in elements):
            order[patch["column"]] = [*elements, patch["with"]]
        if patch["ship_total"]:
            order["ship_total"] = sum((Decimal(r["cost"]) for sh in order["shipments"] for r in sh["rates"]
                                       if r["selected"]), Decimal("0"))

    async def reprice(self, number: str, version: int, **changes) -> None:
        order = self.orders.get(number)
        if order and order["cart_version"] < version:
            order.update(changes, cart_version=version)

    async def add_line(self, **line) -> None:
        # The table's foreign key: a line of an order the view does not have is refused.
        if line["order_number"] not in self.orders:
            raise LookupError(f"line item {line['id']} of unknown order {line['order_number']}")
        self.lines.setdefault(line["id"], line)

    async def set_line_quantity(self, line_id: int, quantity: int) -> None:
        if line_id in self.lines:
            self.lines[line_id]["quantity"] = quantity

    async def remove_line(self, line_id: int) -> None:
        self.lines.pop(line_id, None)

    async def remove_lines(self, number: str) -> None:
        for line_id in [i for i, line in self.lines.items() if line["order_number"] == number]:
            del self.lines[line_id]

    def stamp_with_next_update(self, number: str, at: datetime, event_ids: list[uuid.UUID]) -> None:
        self._stamp = (number, at)

    async def stamp_if_not_done(self) -> None:
        number, at = self._stamp
        order = self.orders.get(number)
        if order and at > order["updated_at"]:
            order["updated_at"] = at

    async def write(self, conn: asyncpg.Connection, schema: str) -> None:
        """Insert everything into `schema`'s (empty) view tables, in their own column order."""
        for table, rows in (("order_view", self.orders.values()),
                            ("order_line_items", sorted(self.lines.values(), key=lambda line: line["id"]))):
            statement = await conn.prepare(f'SELECT * FROM "{schema}".{table} LIMIT 0')
            columns = [a.name for a in statement.get_attributes()]
            missing = set(columns) - (set(next(iter(rows), {})) or set(columns))
            if missing:
                raise KeyError(f"the rebuild does not fill {table} columns {sorted(missing)}")
            await conn.executemany(
                f'INSERT INTO "{schema}".{table} ({", ".join(columns)})'
                f' VALUES ({", ".join(f"${i + 1}" for i in range(len(columns)))})',
                [tuple(row[c] for c in columns) for row in rows])


def _patched_shipments(shipments: list[dict], patch: dict) -> list[dict]:
    """What migrations/013's shipments patches (view.py shipments_backordered,
    placed_shipment_states) do, for a rebuild in memory."""
    if patch["how"] == "backordered":
        return [{**sh, "manifest": [{**item, "backordered": patch["units"].get(
            f"{sh['number']}|{item['variant_id']}", item.get("backordered", 0))} for item in sh["manifest"]]}
                if "manifest" in sh else sh for sh in shipments]
    paid = patch["payment_state"] == "paid"
    return [{**sh, "state": "ready" if paid and not any(item.get("backordered") for item in sh.get("manifest") or [])
             else "pending"} for sh in shipments]
