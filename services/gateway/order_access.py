"""What the gateway keeps of each order to authorise callers: the facts fixed at its creation.

Most routes that name an order read it only to check who is calling: the guest token's
digest, the dialect that created the order, and its currency to price a line or a coupon
(issue #26: four reads of the whole order view per Solidus checkout). Those facts are the
order's `OrderCreated` (`OrderService.access_facts`), so a gateway process keeps them:

- they cannot go stale, in any topology: no later event of the Order changes them
  (services/order/domain.py), a rebuild of the view folds the same events into the same
  values, and a number is never given to a second order (the store refuses a second
  `OrderCreated` for a stream);
- an unknown number is never kept as absent: another instance may create it a moment later;
- only the token's digest is kept, as the order view keeps it; never the token;
- GATEWAY_ORDER_ACCESS_ENTRIES bounds them per process (least recently used out; 0: none),
  about 0.5 KiB each.

A route that needs what changes (the state, totals, lines, payments) or renders the order
reads the view as before, and the facts it reads there are kept too (`remember`).
"""
from __future__ import annotations

from typing import Any, Mapping, cast

from fastapi import Request
from prometheus_client import Counter, Gauge

from services.gateway.services import services
from services.order.api import AccessFacts
from shared.errors import LOCKED_CODES, DomainError
from shared.lru import BoundedMap

READS = Counter("tillstream_gateway_order_access_reads_total",
                "An order's access facts the gateway looked up (services/gateway/order_access.py): hit (no call),"
                " miss (read from the order service, then kept), unknown (no such order: not kept)", ["outcome"])
ENTRIES = Gauge("tillstream_gateway_order_access_entries",
                "Orders whose access facts the gateway process keeps (at most GATEWAY_ORDER_ACCESS_ENTRIES)")
_HIT, _MISS, _UNKNOWN = (READS.labels(outcome) for outcome in ("hit", "miss", "unknown"))
FACTS = tuple(AccessFacts.__annotations__)


class OrderAccessCache:
    """Access facts by order number, least recently used out past `max_entries`."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: BoundedMap[str, AccessFacts] = BoundedMap(max_entries)

    def get(self, number: str) -> AccessFacts | None:
        facts = self._entries.get(number)
        # The caller's own copy: what is kept never changes.
        return cast(AccessFacts, dict(facts)) if facts is not None else None

    def keep(self, order: Mapping[str, Any]) -> None:
        """The facts of `order` (its access facts, or its view: the other fields are left)."""
        self._entries.put(order["number"], cast(AccessFacts, {name: order[name] for name in FACTS}))
        ENTRIES.set(len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def cache_of(request: Request) -> OrderAccessCache:
    return request.app.state.order_access


async def access_facts(request: Request, number: str) -> AccessFacts | None:
    """The order's access facts, kept or read (then kept); None if there is no such order."""
    cache = cache_of(request)
    facts = cache.get(number)
    if facts is not None:
        _HIT.inc()
        return facts
    try:
        facts = await services(request).order.access_facts(number)
    except DomainError as refusal:
        if refusal.status == 404:
            _UNKNOWN.inc()
            return None
        raise
    _MISS.inc()
    cache.keep(facts)
    return facts


def remember(request: Request, order: Mapping[str, Any]) -> None:
    """An order view the gateway read or was answered with: its access facts are kept, so
    the next route that only authorises reads nothing."""
    cache_of(request).keep(order)


def placed_unsaid(refusal: DomainError) -> bool:
    """A refusal because the order is completing or placed that does not say which (as
    `order_placed` does): the dialects answer the two differently, and the access facts
    cannot tell them apart, so a route authorised with them reads the view then."""
    return refusal.code in LOCKED_CODES and refusal.code != "order_placed"
