"""A whole Solidus checkout in one process reads almost no event stream: each command runs on
the state this process last committed (its own commands', a saga's steps', the order view's
inline projection's), each step answers with what it stored, an order's first payment takes its
payments' stream to be new (shared/aggregate.py, shared/steps.py). Counted by the system's
`tillstream_stream_reads_total`."""
from __future__ import annotations

from tests.helpers.solidus import full_flow
from tests.test_delivery_by_call import CARD, counted

SCHEMAS = ("cart", "order", "shipping", "payment")


def stream_reads(system) -> dict[tuple[str, str], float]:
    return {(schema, query): counted(system, "tillstream_stream_reads_total", schema=schema, query=query)
            for schema in SCHEMAS for query in ("load", "answers")}


async def test_a_checkout_reads_only_the_streams_it_cannot_know(gateway, system):
    before = stream_reads(system)
    _, _, _, completed = await full_flow(gateway, card=CARD)
    assert completed is not None and completed.status_code == 200, completed and completed.text
    after = stream_reads(system)
    reads = {key: after[key] - before[key] for key in after}
    # No step's answer is queried: each call stored its answer.
    assert sum(reads[schema, "answers"] for schema in SCHEMAS) == 0, reads
    # What is left (at most): the cart's stream at its first line (new, unknown); the order's
    # when that line's CartRepriced finds nothing to do on the trusted order (decided again on
    # the stream), and once more when shipping's Kafka consumer answers the delivery request
    # while the call's step is still at it (a race: both read); the shipments' stream at its
    # first build (new), that race again, the shipment looked up twice by the gateway and
    # select_method's read; the payments' read of process_payments (its gateway calls cannot
    # be undone, so it never trusts). The advances, the steps, the saga's host and the first
    # payment read nothing.
    assert reads["cart", "load"] <= 1 and reads["payment", "load"] <= 1, reads
    assert reads["order", "load"] <= 2 and reads["shipping", "load"] <= 6, reads
