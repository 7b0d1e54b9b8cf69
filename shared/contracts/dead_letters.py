"""The notice a service publishes when one of its consumers gives up on a message.

A message that still fails after `CONSUMER_MAX_ATTEMPTS` is dead-lettered (`<topic>.dlq`
and the `dead_letters` table) and the consumer moves on; the notice tells whoever waits
for that message's effects that none will come. The completion saga listens for notices
about its own commands and compensates at once instead of waiting for the step's deadline.
Each service publishes its notices on its own topic (`<service>.MessageDeadLettered`), each
notice a stream of its own (aggregate type `DeadLetter`, id `<consumer>/<letter id>`) keyed
by that id: an order's key carries the order's stream alone. The message's key is in
`original_key`.
"""
from __future__ import annotations

from shared.envelope import EVENT_TYPES, DomainEvent


class DeadLetterNotice(DomainEvent):
    """A consumer of this service dead-lettered a message."""
    consumer: str             # the consumer group that gave up, e.g. "payment.orders"
    original_event_id: str    # the dead-lettered event (empty when it could not be decoded)
    original_type: str
    original_key: str | None  # the Kafka key: the order number
    error: str


def notice_type(service: str) -> type[DeadLetterNotice]:
    """`<service>.MessageDeadLettered`: the notice as `service`'s contracts declare it."""
    notice = EVENT_TYPES[(f"{service}.MessageDeadLettered", 1)]
    if not issubclass(notice, DeadLetterNotice):
        raise TypeError(f"{service}.MessageDeadLettered is not a DeadLetterNotice")
    return notice
