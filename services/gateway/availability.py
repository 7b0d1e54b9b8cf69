"""What the storefront is shown of a variant's availability: its stock (the shipping
service's) and whether it was discarded (the catalog's, in the cart service).

Read through a per-process cache at most STOCK_DISPLAY_MAX_AGE_MS old, so rendering an
order costs no query while a checkout runs: the stock shown is a hint for the storefront
("only 3 left", hiding sold-out variants); the completion judges the real stock, row-locked
(services/shipping). 0 disables the cache.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import Request

from services.gateway.services import services
from shared.contracts.shipping import StockLevel

MAX_AGE_S = int(os.environ.get("STOCK_DISPLAY_MAX_AGE_MS", "1000")) / 1000
MAX_ENTRIES = 10_000  # beyond this the cache forgets its stale entries
CHUNK = 1000


@dataclass(frozen=True)
class Availability:
    stock: StockLevel
    discarded: bool


async def availability(request: Request, variant_ids: Iterable[int]) -> dict[int, Availability]:
    wanted = sorted(set(variant_ids))
    cache: dict[int, tuple[float, Availability]] = request.app.state.__dict__.setdefault("availability", {})
    now = time.monotonic()
    # What the cache holds fresh is taken now: a `forget` by a concurrent request while the
    # stale ones are fetched below must not take it away from this answer.
    known = {v: entry[1] for v in wanted if (entry := cache.get(v)) is not None and now - entry[0] < MAX_AGE_S}
    stale = [v for v in wanted if v not in known]
    if stale:
        levels: dict[str, dict] = {}
        discarded: set[int] = set()
        for at in range(0, len(stale), CHUNK):  # the services answer at most CHUNK ids a call
            chunk = stale[at:at + CHUNK]
            levels |= await services(request).shipping.stock(variant_ids=chunk)
            discarded |= set(await services(request).cart.discarded_among(variant_ids=chunk))
        if len(cache) > MAX_ENTRIES:
            for v in [v for v, (at, _) in cache.items() if now - at >= MAX_AGE_S]:
                del cache[v]
        fresh = {v: Availability(StockLevel.model_validate(levels.get(str(v), {})), v in discarded) for v in stale}
        cache.update((v, (now, a)) for v, a in fresh.items())
        known |= fresh
    return {v: known[v] for v in wanted}


def forget(request: Request, variant_id: int) -> None:
    """This process's change to a variant shows at once here (other gateways: within the max age)."""
    request.app.state.__dict__.get("availability", {}).pop(variant_id, None)


def forget_stock_of(request: Request, order: dict) -> None:
    """A completion through this gateway took (or, refused, released) its lines' stock before it
    answered: the next read of those variants shows the stock it left, not the cached count."""
    for line in order.get("line_items", []):
        forget(request, line["variant_id"])
