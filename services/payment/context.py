"""What the payment service works with in a process, the payment gateway among it: built from
the process's `ServiceContext` once the service has started (`ServiceDefinition.build`),
never at import."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from services.payment.domain import OrderPayments
from services.payment.gateway import BogusGateway
from shared import safety
from shared.aggregate import Repository
from shared.eventstore import EventStore
from shared.reference_cache import ReferenceCache
from shared.service import ServiceContext


@dataclass
class PaymentContext:
    pool: asyncpg.Pool
    settings: Any
    store: EventStore
    payments: Repository[OrderPayments]
    gateway: BogusGateway
    # Its reference data (payment methods) as this process last read it.
    reference: ReferenceCache

    async def close(self) -> None:
        self.reference.close()


def connect_gateway(settings: Any, pool: asyncpg.Pool) -> BogusGateway:
    """The gateway TILLSTREAM_PAYMENT_GATEWAY names. The only one so far is the test one,
    which shared/safety.py allows in development only."""
    chosen = safety.check_payment_gateway(settings)
    if chosen != safety.TEST_PAYMENT_GATEWAY:
        raise RuntimeError(f"no payment gateway {chosen!r} is implemented")
    return BogusGateway(pool)


def build(ctx: ServiceContext) -> PaymentContext:
    return PaymentContext(pool=ctx.pool, settings=ctx.settings, store=ctx.store,
                          payments=Repository(ctx.store, OrderPayments),
                          gateway=connect_gateway(ctx.settings, ctx.pool),
                          reference=ReferenceCache(ctx.store.schema, ctx.settings))
