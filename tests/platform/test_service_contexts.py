"""#25 (S0.2): each runtime of a service builds its own context at start-up
(`ServiceDefinition.build`): two of the same service in one process share no repository (nor
its cache), saga runner, view watcher, payment gateway or event store."""
from __future__ import annotations

from services.cart.app import definition as cart
from services.order.app import definition as order
from services.order.context import OrderContext
from services.payment.app import definition as payment
from services.shipping.app import definition as shipping
from shared.eventstore import EventStore
from shared.kafka import events_topic
from shared.service import ServiceContext


def _context(definition, stack, pool, schema):
    peers = {name: object() for name in definition.peers}
    ctx = ServiceContext(definition.name, stack.settings(), pool, EventStore(schema, events_topic(definition.name)),
                         peers=peers)
    assert definition.build is not None
    return definition.build(ctx)


async def test_two_order_contexts_in_one_process_share_nothing(stack, order_schema, order_pool):
    first, second = (_context(order, stack, order_pool, order_schema) for _ in range(2))
    assert isinstance(first, OrderContext) and isinstance(second, OrderContext)
    for part in ("store", "orders", "completion", "watcher"):
        assert getattr(first, part) is not getattr(second, part), part
    assert first.orders._states is not second.orders._states
    for context in (first, second):
        # Each runner drives sagas with its own repository, pool and participants.
        assert context.completion.repository is context.orders
        assert context.completion.pool is order_pool
        assert vars(context.completion.peers) == context.peers
        assert context.orders.store is context.store
    await first.close()
    await second.close()


async def test_every_service_builds_its_own_context(stack, schema, pool):
    for definition, held in ((cart, "carts"), (shipping, "shipments"), (payment, "payments")):
        first, second = (_context(definition, stack, pool, schema) for _ in range(2))
        assert getattr(first, held) is not getattr(second, held), definition.name
        assert getattr(first, held).store is first.store, definition.name
    gateways = [_context(payment, stack, pool, schema).gateway for _ in range(2)]
    assert gateways[0] is not gateways[1] and gateways[0].pool is pool
