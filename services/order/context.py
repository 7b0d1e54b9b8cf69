"""What the order service works with in a process: its repository of orders, the completion
saga's runner (bound to the participants as this process calls them) and the order view's
watcher. Built from the process's `ServiceContext` once the service has started
(`ServiceDefinition.build`), never at import: two runtimes of the service share none of it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from services.order.commands import project
from services.order.consumers import view_is_inline
from services.order.domain import Order
from services.order.saga import COMPLETION
from services.order.view_watcher import ViewWatcher
from shared.aggregate import Repository
from shared.eventstore import EventStore
from shared.reference_cache import ReferenceCache
from shared.saga_runner import SagaRunner
from shared.service import ServiceContext

# How long the end of a completion waits for the view to show the participants' answers.
VIEW_CATCH_UP_S = 30.0  # after a restart, until the view consumer has rejoined


@dataclass
class OrderContext:
    pool: asyncpg.Pool
    settings: Any
    store: EventStore
    # The services it calls (cart, shipping, payment), in-process or over HTTP.
    peers: dict[str, Any]
    orders: Repository[Order]
    # Carries out the completion saga: started by `commands.complete`, driven by calls of the
    # participants, the answers also coming from Kafka (the `saga` subscription, whose
    # idempotency records it shares) and the sweep (consumers.run_expired_steps).
    completion: SagaRunner
    watcher: ViewWatcher
    # Its reference data (countries and their states) as this process last read it.
    reference: ReferenceCache

    async def close(self) -> None:
        await self.watcher.close()
        self.reference.close()


def build(ctx: ServiceContext) -> OrderContext:
    orders = Repository(ctx.store, Order)
    watcher = ViewWatcher()
    completion = SagaRunner(COMPLETION, orders, project, ctx.settings, consumer="order.saga")

    async def view_applied(number: str, event_ids: list[str]) -> bool:
        """The end of a completion waits (bounded) until the view shows what the participants
        answered, so an order shown complete shows its payments authorised and its stock allocated."""
        if view_is_inline():  # the participants applied their answers to the view as they stored them
            return True
        return await watcher.wait_applied(ctx.settings.database_url, ctx.pool, number, event_ids, VIEW_CATCH_UP_S)

    completion.bind(ctx.pool, ctx.peers, await_view=view_applied)
    return OrderContext(pool=ctx.pool, settings=ctx.settings, store=ctx.store, peers=ctx.peers, orders=orders,
                        completion=completion, watcher=watcher,
                        reference=ReferenceCache(ctx.store.schema, ctx.settings))
