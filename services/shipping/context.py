"""What the shipping service works with in a process: built from the process's `ServiceContext`
once the service has started (`ServiceDefinition.build`), never at import."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from services.shipping.domain import OrderShipments
from shared.aggregate import Repository
from shared.eventstore import EventStore
from shared.reference_cache import ReferenceCache
from shared.service import ServiceContext


@dataclass
class ShippingContext:
    pool: asyncpg.Pool
    settings: Any
    store: EventStore
    shipments: Repository[OrderShipments]
    # Its reference data (locations, shipping methods, zones) as this process last read it.
    reference: ReferenceCache

    async def close(self) -> None:
        self.reference.close()


def build(ctx: ServiceContext) -> ShippingContext:
    return ShippingContext(pool=ctx.pool, settings=ctx.settings, store=ctx.store,
                           shipments=Repository(ctx.store, OrderShipments),
                           reference=ReferenceCache(ctx.store.schema, ctx.settings))
