"""The order view, folded from events. Applied inline for the order's own events (so a
command's response already shows them) and by the `order.view` consumer for the other
services' events. Each apply NOTIFYs `order_view` so waiting readers wake at once."""
from __future__ import annotations

import asyncpg

from decimal import ROUND_DOWN, Decimal

from shared.contracts import cart as c
from shared.contracts import order as o
from shared.contracts import payment as p
from shared.contracts import shipping as s
from shared.envelope import EventEnvelope, decode_event

VIEW_CHANNEL = "order_view"
# Solidus's payment states, as the payment service's events move a payment along.
PAYMENT_STATE_AFTER = {p.PaymentInvalidated: "invalid", p.PaymentAuthorized: "pending", p.PaymentCaptured: "completed",
                       p.PaymentFailed: "failed", p.PaymentVoided: "void", p.PaymentRefunded: "refunded"}
VIEW_CONSUMER = "order.view"


async def apply_to_view(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    event = decode_event(envelope)
    number = envelope.aggregate_id
    match event:
        case o.OrderCreated():
            await conn.execute(
                "INSERT INTO order_view (number, guest_token, state, currency, email, user_id, created_at, updated_at)"
                " VALUES ($1, $2, 'cart', $3, $4, $5, $6, $6) ON CONFLICT (number) DO NOTHING",
                event.number, event.guest_token, event.currency, event.email, event.user_id, envelope.occurred_at)
        case o.CheckoutRestarted():
            # Solidus deletes the (pending) shipments when the checkout restarts.
            await conn.execute("UPDATE order_view SET state = $2, shipments = '[]', ship_total = 0,"
                               " pending_request = NULL WHERE number = $1", number, event.state)
        case o.CheckoutAdvanced():
            await conn.execute("UPDATE order_view SET state = $2, pending_request = NULL WHERE number = $1",
                               number, event.to_state)
        case o.ContactDetailsChanged():
            await conn.execute("UPDATE order_view SET email = coalesce($2, email), contact_phone = $3"
                               " WHERE number = $1", number, event.email, event.phone)
        case o.OrderEmailChanged():
            await conn.execute("UPDATE order_view SET email = $2 WHERE number = $1", number, event.email)
        case o.BillAddressChanged():
            await conn.execute("UPDATE order_view SET bill_address = $2 WHERE number = $1", number,
                               event.address.model_dump(mode="json"))
        case o.ShipAddressChanged():
            await conn.execute("UPDATE order_view SET ship_address = $2 WHERE number = $1", number,
                               event.address.model_dump(mode="json"))
        case o.DeliveryRequested():
            await conn.execute("UPDATE order_view SET pending_request = $2 WHERE number = $1",
                               number, event.request_id)
        case o.DeliveryRefused():
            await conn.execute("UPDATE order_view SET pending_request = NULL, refusal = $2 WHERE number = $1",
                               number, event.model_dump(mode="json"))
        case s.ShipmentsBuilt():
            await _set_shipments(conn, number, [sh.model_dump(mode="json") for sh in event.shipments])
        case s.ShippingRateSelected():
            shipments = await conn.fetchval("SELECT shipments FROM order_view WHERE number = $1", number) or []
            for shipment in shipments:
                if shipment["number"] == event.shipment_number:
                    for rate in shipment["rates"]:
                        rate["selected"] = rate["id"] == event.rate_id
            await _set_shipments(conn, number, shipments)
        case p.PaymentCreated():
            payment = {"id": event.payment_id, "payment_method_id": event.payment_method_id,
                       "payment_method_name": event.payment_method_name, "method_type": event.method_type,
                       "amount": str(event.amount), "state": "checkout", "created_at": envelope.occurred_at.isoformat(),
                       "updated_at": envelope.occurred_at.isoformat(),
                       "source": event.source.model_dump(mode="json", exclude={"gateway_token"}) if event.source else None}
            await conn.execute("UPDATE order_view SET payments = payments || $2::jsonb WHERE number = $1"
                               " AND NOT payments @> $3::jsonb", number, [payment], [{"id": event.payment_id}])
        case _ if type(event) in PAYMENT_STATE_AFTER:
            await _set_payment_state(conn, number, event.payment_id, PAYMENT_STATE_AFTER[type(event)], envelope)
        case o.OrderCanceled():
            await conn.execute("UPDATE order_view SET state = 'canceled' WHERE number = $1", number)
        case o.PaymentStateChanged():
            shipments = await conn.fetchval("SELECT shipments FROM order_view WHERE number = $1", number) or []
            for shipment in shipments:
                shipment["state"] = event.shipment_state or shipment["state"]
            await conn.execute("UPDATE order_view SET payment_total = $2, payment_state = $3, shipment_state = $4,"
                               " shipments = $5 WHERE number = $1", number, event.payment_total,
                               event.payment_state, event.shipment_state, shipments)
        case o.CompletionRequested():
            await conn.execute("UPDATE order_view SET pending_request = $2 WHERE number = $1",
                               number, event.request_id)
        case o.CompletionFailed():
            await conn.execute("UPDATE order_view SET state = $2, pending_request = NULL, refusal = $3"
                               " WHERE number = $1", number, event.state, event.model_dump(mode="json"))
        case o.OrderCompleted():
            shipments = await conn.fetchval("SELECT shipments FROM order_view WHERE number = $1", number) or []
            for shipment in shipments:
                shipment["state"] = event.shipment_state
            await conn.execute(
                "UPDATE order_view SET state = 'complete', completed_at = $2, payment_total = $3,"
                " payment_state = $4, shipment_state = $5, shipments = $6, pending_request = NULL, reference = $7"
                " WHERE number = $1", number, envelope.occurred_at, event.payment_total, event.payment_state,
                event.shipment_state, shipments, event.reference)
        case s.ShipmentsDiscarded():
            await _set_shipments(conn, number, [])
        case c.LineItemAdded():
            await conn.execute(
                "INSERT INTO order_line_items (id, order_number, variant_id, quantity, price, variant)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING", event.line_item_id, number,
                event.variant.id, event.quantity, event.price, event.variant.model_dump(mode="json"))
        case c.LineItemQuantityChanged():
            await conn.execute("UPDATE order_line_items SET quantity = $2 WHERE id = $1",
                               event.line_item_id, event.quantity)
        case c.LineItemRemoved():
            await conn.execute("DELETE FROM order_line_items WHERE id = $1", event.line_item_id)
        case c.CartEmptied():
            await conn.execute("DELETE FROM order_line_items WHERE order_number = $1", number)
            await _set_shipments(conn, number, [])  # Solidus's empty deletes shipments too
        case c.CartRepriced():
            await conn.execute(
                "UPDATE order_view SET item_total = $2, adjustment_total = $3, total_quantity = $4, item_count = $5,"
                " adjustments = $6, cart_version = $7 WHERE number = $1 AND cart_version < $7", number,
                event.item_total, event.adjustment_total, event.total_quantity, event.item_count,
                [a.model_dump(mode="json") for a in event.adjustments], envelope.sequence)
    await conn.execute("UPDATE order_view SET updated_at = greatest(updated_at, $2) WHERE number = $1",
                       number, envelope.occurred_at)
    await conn.execute("SELECT pg_notify($1, $2)", VIEW_CHANNEL, number)


async def _set_shipments(conn: asyncpg.Connection, number: str, shipments: list[dict]) -> None:
    ship_total = sum((Decimal(r["cost"]) for sh in shipments for r in sh["rates"] if r["selected"]), Decimal("0"))
    await conn.execute("UPDATE order_view SET shipments = $2, ship_total = $3 WHERE number = $1",
                       number, shipments, ship_total)


async def _set_payment_state(conn: asyncpg.Connection, number: str, payment_id: int, state: str,
                             envelope: EventEnvelope) -> None:
    payments = await conn.fetchval("SELECT payments FROM order_view WHERE number = $1", number) or []
    for payment in payments:
        if payment["id"] == payment_id:
            payment["state"] = state
            payment["updated_at"] = envelope.occurred_at.isoformat()
    await conn.execute("UPDATE order_view SET payments = $2 WHERE number = $1", number, payments)


_READ_ORDER = """
SELECT v.*, coalesce(t.rate, 0) AS tax_rate, l.ids, l.variant_ids, l.quantities, l.prices, l.variants
FROM order_view v
LEFT JOIN tax_rates t ON t.currency = v.currency
LEFT JOIN LATERAL (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(variant_id ORDER BY id) AS variant_ids,
           array_agg(quantity ORDER BY id) AS quantities, array_agg(price ORDER BY id) AS prices,
           jsonb_agg(variant ORDER BY id) AS variants
    FROM order_line_items WHERE order_number = v.number) l ON true
WHERE v.number = $1"""


async def read_order(conn: asyncpg.Connection | asyncpg.Pool, number: str) -> dict | None:
    """The order view with its lines and taxes: one query (it is on every request's path)."""
    row = await conn.fetchrow(_READ_ORDER, number)
    if row is None:
        return None
    order = dict(row)
    ids, variant_ids, quantities, prices, variants = (order.pop(k) or [] for k in
                                                      ("ids", "variant_ids", "quantities", "prices", "variants"))
    order["line_items"] = [{"id": i, "variant_id": v, "quantity": q, "price": p, "variant": var}
                           for i, v, q, p, var in zip(ids, variant_ids, quantities, prices, variants)]
    order.update(order_taxes(order.pop("tax_rate"), order["item_total"] + order["adjustment_total"],
                             order["ship_total"]))
    order["total"] = (order["item_total"] + order["ship_total"] + order["adjustment_total"]
                      + order["additional_tax_total"])
    return order


def truncate(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"), rounding=ROUND_DOWN)


def order_taxes(rate: Decimal, items_after_discounts: Decimal, shipping: Decimal) -> dict[str, Decimal]:
    """VAT added on top (GetCandy's GBP channel), truncated to cents as the original does."""
    items_tax, ship_tax = truncate(items_after_discounts * rate), truncate(shipping * rate)
    return {"tax_rate": rate, "items_tax": items_tax, "shipping_tax": ship_tax,
            "additional_tax_total": items_tax + ship_tax}


async def has_settled(conn: asyncpg.Connection | asyncpg.Pool, number: str, request_id: str) -> bool:
    """The order no longer awaits `request_id`, and the view shows what settled it.

    The saga answers in its own consumer group, so it can record an order's completion
    before the view consumer has folded in the payment or shipping events that caused it
    (a captured payment, say). Settled therefore also means: every order event caused by
    another service's event has that event applied to the view; the view consumer applies
    a partition in order, so the events before it are in the view as well."""
    return bool(await conn.fetchval(_SETTLED, number, request_id, VIEW_CONSUMER))


_SETTLED = """
SELECT v.pending_request IS DISTINCT FROM $2 AND NOT EXISTS (
    SELECT 1 FROM events e,
         LATERAL (SELECT CASE WHEN e.causation_id ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                              THEN e.causation_id::uuid END AS id) cause
    WHERE e.aggregate_type = 'Order' AND e.aggregate_id = $1 AND cause.id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM events own WHERE own.event_id = cause.id)
      AND NOT EXISTS (SELECT 1 FROM processed_events p WHERE p.consumer = $3 AND p.event_id = cause.id))
FROM order_view v WHERE v.number = $1"""


async def unapplied(conn: asyncpg.Connection | asyncpg.Pool, event_ids: list[str]) -> int:
    """How many of these events the view has not applied yet. The order's own events are
    applied in the transaction that stores them; the others once the consumer has them."""
    if not event_ids:
        return 0
    applied = await conn.fetchval(
        "SELECT count(*) FROM unnest($2::uuid[]) AS wanted(id) WHERE"
        " EXISTS (SELECT 1 FROM processed_events p WHERE p.consumer = $1 AND p.event_id = wanted.id)"
        " OR EXISTS (SELECT 1 FROM events e WHERE e.event_id = wanted.id)",
        VIEW_CONSUMER, list(set(event_ids)))
    return len(set(event_ids)) - applied
