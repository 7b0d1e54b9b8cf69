"""What the cart service works with in a process: built from the process's `ServiceContext`
once the service has started (`ServiceDefinition.build`), never at import."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from services.cart.domain import Cart
from shared.aggregate import Repository
from shared.eventstore import EventStore
from shared.reference_cache import ReferenceCache
from shared.service import ServiceContext


@dataclass
class CartContext:
    pool: asyncpg.Pool
    settings: Any
    store: EventStore
    carts: Repository[Cart]
    # Its reference data (variants, their prices, which are discarded) as this process last read it.
    reference: ReferenceCache

    async def close(self) -> None:
        self.reference.close()


def build(ctx: ServiceContext) -> CartContext:
    return CartContext(pool=ctx.pool, settings=ctx.settings, store=ctx.store, carts=Repository(ctx.store, Cart),
                       reference=ReferenceCache(ctx.store.schema, ctx.settings))
