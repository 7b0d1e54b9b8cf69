"""The shipping service's operations: `ShippingOperations`, the implementation of
`ShippingService` (services/shipping/api.py), built from the service's context in each process
that hosts it and called through shared/rpc.py (in-process, or `POST /bus/<operation>` alone)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterator, cast

from pydantic import BaseModel

from services.shipping import commands
from services.shipping.api import (
    Ack,
    EstimatedRate,
    ReferenceLoaded,
    ShipmentFound,
    ShippingService,
    StockLevelJson,
    StockLine,
)
from services.shipping.consumers import ORDERS_CONSUMER
from services.shipping.context import ShippingContext
from services.shipping.domain import Line, OrderShipments, uncovered
from shared import context
from shared.aggregate import DomainError, not_found
from shared.contracts.order import Address, DeliveryLine
from shared.contracts.shipping import (
    LocationStock,
    Shipment,
    ShipmentsBuilt,
    ShipmentsUnavailable,
    StockAllocated,
    StockAllocationFailed,
    StockLevel,
    StockReleased,
)
from shared.db import Upsert, upsert_all
from shared.faults import fail_point, hold_point
from shared.inline import remember_applied
from shared.steps import StepReply, run_step
from shared.under_way import answering

MAX_STOCK_QUERY = 1000  # variants per `stock` call


def _quantity(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 2**31  # not a count: uncovered


def _id(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31 else -1


class ShippingOperations(ShippingService):
    def __init__(self, ctx: ShippingContext) -> None:
        self.ctx = ctx

    async def select_rate(self, number: str, *, shipment_number: str, rate_id: Any = None) -> Ack:
        result = await commands.select_rate(self.ctx, number, shipment_number, _id(rate_id))
        return {"events": result.event_ids}

    async def select_method(self, number: str, *, shipment_number: str, shipping_method_id: Any = None) -> Ack:
        if _id(shipping_method_id) < 0:
            raise not_found("shipping method")
        result = await commands.select_method(self.ctx, number, shipment_number, shipping_method_id)
        return {"events": result.event_ids}

    async def find_shipment(self, *, shipment_number: str) -> ShipmentFound:
        """The shipment and its order. From what this process knows when it has the shipment
        (its order never changes; the shipments as its last command committed them: a route
        shows it, or names it to a command, which judges again on the stream); else read."""
        order_number = self.ctx.shipment_orders.get(shipment_number)
        if order_number is None:
            order_number = await self.ctx.pool.fetchval("SELECT order_number FROM shipment_index WHERE number = $1",
                                                        shipment_number)
            if order_number is None:
                raise not_found("shipment")
            self.ctx.shipment_orders.put(shipment_number, order_number)
        shipment = _shipment(self.ctx.shipments.committed_here(order_number), shipment_number)
        if shipment is None:  # not known here, or not as this process last saw the order's shipments
            shipment = _shipment(await self.ctx.shipments.load(self.ctx.pool, order_number), shipment_number)
        if shipment is None:
            raise not_found("shipment")
        return {"order_number": order_number, "shipment": shipment.model_dump(mode="json")}

    async def stock(self, *, variant_ids: list[int]) -> dict[str, StockLevelJson]:
        wanted = sorted({v for v in variant_ids if isinstance(v, int) and 0 < v < 2**31})[:MAX_STOCK_QUERY]
        rows = await self.ctx.pool.fetch(
            "SELECT i.id, i.variant_id, i.stock_location_id, l.name, i.count_on_hand, i.backorderable"
            " FROM stock_items i JOIN stock_locations l ON l.id = i.stock_location_id"
            " WHERE l.active AND i.variant_id = ANY($1::int[]) ORDER BY i.variant_id, i.stock_location_id", wanted)
        levels = {v: StockLevel() for v in wanted}
        for r in rows:
            level = levels[r["variant_id"]]
            level.items.append(LocationStock(id=r["id"], stock_location_id=r["stock_location_id"],
                                             stock_location_name=r["name"],
                                             count_on_hand=r["count_on_hand"], backorderable=r["backorderable"]))
            level.total_on_hand += r["count_on_hand"]
            level.backorderable = level.backorderable or r["backorderable"]
        return {str(v): cast(StockLevelJson, level.model_dump()) for v, level in levels.items()}

    async def estimated_rates(self, *, country_iso: str, currency: str = "USD") -> list[EstimatedRate]:
        methods = await commands.methods_for(self.ctx, self.ctx.pool, country_iso, currency, users_only=False)
        return [cast(EstimatedRate, {"shipping_method_id": m.id, "name": m.name, "code": m.code, "cost": m.cost,
                                     "zone": m.zone}) for m in methods]

    async def load_reference(self, *, zones: list[dict[str, Any]] | None = None,
                             stock_locations: list[dict[str, Any]] | None = None,
                             shipping_methods: list[dict[str, Any]] | None = None) -> ReferenceLoaded:
        given = {"zones": zones, "stock_locations": stock_locations, "shipping_methods": shipping_methods}
        body = ShippingReference.model_validate({name: value for name, value in given.items() if value is not None})
        await upsert_all(self.ctx.pool, [
            *(Upsert("zones", zone.model_dump()) for zone in body.zones),
            *(row for location in body.stock_locations for row in location.rows()),
            *(Upsert("shipping_methods", method.model_dump()) for method in body.shipping_methods)])
        return {"zones": len(body.zones), "stock_locations": len(body.stock_locations),
                "shipping_methods": len(body.shipping_methods)}

    async def unavailable(self, *, lines: list[StockLine]) -> list[int]:
        given = [line if isinstance(line, dict) else {} for line in (lines if isinstance(lines, list) else [])]
        wanted = [Line(variant_id=_id(line.get("variant_id")), quantity=_quantity(line.get("quantity")),
                       track_inventory=line.get("track_inventory") is not False) for line in given]
        if len(wanted) > MAX_STOCK_QUERY:
            raise DomainError("too_many_lines", f"at most {MAX_STOCK_QUERY} lines", status=422)
        stock = await self.stock(variant_ids=[line.variant_id for line in wanted])
        return uncovered(wanted, {int(v): StockLevel.model_validate(level) for v, level in stock.items()})

    async def build_shipments(self, number: str, *, request_id: str, ship_address: dict[str, Any], currency: str,
                              lines: list[dict[str, Any]], requested_at: int | None = None,
                              first: bool = False) -> StepReply:
        # The order calls under its DeliveryRequested (services/order/delivery.py), which also
        # reaches this process's consumer from Kafka, often while this call still waits for a
        # connection: that delivery waits for the call (at most the caller's timeout), then is
        # passed over without a transaction if the call built (it would only find the answer), and
        # handled as ever if it failed (shared/under_way.py).
        request_event_id = context.causation_id.get()
        with answering(ORDERS_CONSUMER, request_event_id, self.ctx.settings.saga_call_timeout_ms / 1000):
            await hold_point("shipping.build_shipments")  # fault injection: the call held still, under way
            fail_point("shipping.build_shipments")  # fault injection: the call fails, its event still comes
            address = Address.model_validate(ship_address)
            wanted = [DeliveryLine.model_validate(line) for line in lines]
            reply = await run_step(self.ctx.pool, self.ctx.store, OrderShipments.aggregate_type, number,
                                   request_id, (ShipmentsBuilt, ShipmentsUnavailable),
                                   lambda conn: commands.build_shipments(self.ctx, conn, number, request_id,
                                                                         ship_address=address, currency=currency,
                                                                         lines=wanted, requested_at=requested_at,
                                                                         first=first))
            if request_event_id is not None:
                remember_applied(ORDERS_CONSUMER, [request_event_id])
        return reply

    async def allocate_stock(self, number: str, *, saga_id: str, lines: list[dict[str, Any]]) -> StepReply:
        locked = [DeliveryLine.model_validate(line) for line in lines]
        return await run_step(self.ctx.pool, self.ctx.store, OrderShipments.aggregate_type, number, saga_id,
                              (StockAllocated, StockAllocationFailed),
                              lambda conn: commands.allocate_stock(self.ctx, conn, number, saga_id, locked))

    async def release_stock(self, number: str, *, saga_id: str) -> StepReply:
        return await run_step(self.ctx.pool, self.ctx.store, OrderShipments.aggregate_type, number, saga_id,
                              (StockReleased,), lambda conn: commands.release_stock(self.ctx, conn, number, saga_id))


# -- reference data (demo data, imports): the loader's input, validated -----------------------
class Zone(BaseModel):
    id: int
    name: str
    description: str = ""
    countries: list[str]


class StockItem(BaseModel):
    variant_id: int
    count_on_hand: int
    backorderable: bool = False


class Location(BaseModel):
    id: int
    name: str
    active: bool = True
    stock: list[StockItem] = []

    def rows(self) -> Iterator[Upsert]:
        yield Upsert("stock_locations", self.model_dump(exclude={"stock"}))
        yield from (Upsert("stock_items", {**item.model_dump(), "stock_location_id": self.id},
                           key=("stock_location_id", "variant_id")) for item in self.stock)


class ShippingMethodIn(BaseModel):
    id: int
    name: str
    code: str
    cost: Decimal
    currency: str
    zone_ids: list[int]
    available_to_users: bool = True


class ShippingReference(BaseModel):
    zones: list[Zone] = []
    stock_locations: list[Location] = []
    shipping_methods: list[ShippingMethodIn] = []


def _shipment(shipments: OrderShipments | None, number: str) -> Shipment | None:
    return next((s for s in shipments.shipments if s.number == number), None) if shipments is not None else None
