"""What the shipping service works with in a process: built from the process's `ServiceContext`
once the service has started (`ServiceDefinition.build`), never at import."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.shipping.domain import OrderShipments
from shared.aggregate import Repository
from shared.eventstore import EventStore
from shared.lru import BoundedMap
from shared.reference_cache import ReferenceCache
from shared.service import ServiceContext

SHIPMENT_ORDERS_KEPT = 10_000  # about 150 bytes each


@dataclass
class ShippingContext:
    pool: asyncpg.Pool
    settings: Any
    store: EventStore
    shipments: Repository[OrderShipments]
    # Its reference data (locations, shipping methods, zones) as this process last read it.
    reference: ReferenceCache
    # Each shipment's order, as this process last read it: a shipment number is its order's for good.
    shipment_orders: BoundedMap[str, str] = field(default_factory=lambda: BoundedMap(SHIPMENT_ORDERS_KEPT))

    async def close(self) -> None:
        self.reference.close()


def build(ctx: ServiceContext) -> ShippingContext:
    return ShippingContext(pool=ctx.pool, settings=ctx.settings, store=ctx.store,
                           shipments=Repository(ctx.store, OrderShipments),
                           reference=ReferenceCache(ctx.store.schema, ctx.settings))
