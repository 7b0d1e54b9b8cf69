"""The gateway's stock display cache (services/gateway/availability.py) under concurrency: a
`forget` by one request (a completion through this gateway) while another is fetching stale
entries must not break the second one's answer. It did: the answer was read back from the cache
after the await, and a forgotten entry was a KeyError, a 500 on `next` (seen in a 10-minute soak).
The services are in-process stand-ins here: what is under test is the cache's bookkeeping."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from fastapi import FastAPI
from starlette.requests import Request

from services.gateway.availability import availability, forget


class Stock:
    """Answers `stock` after `forget` of another variant has run in a concurrent request."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.calls = 0

    async def stock(self, *, variant_ids: list[int]) -> dict[str, dict]:
        self.calls += 1
        await asyncio.sleep(0)
        forget(self.request, 1)  # what a completion answered meanwhile does
        return {str(v): {"total_on_hand": 10 * v, "locations": []} for v in variant_ids}

    async def discarded_among(self, *, variant_ids: list[int]) -> list[int]:
        return []


async def test_a_variant_forgotten_while_others_are_fetched_is_still_answered():
    app = FastAPI()
    request = Request({"type": "http", "app": app, "headers": []})
    stock = Stock(request)
    app.state.services = SimpleNamespace(shipping=stock, cart=stock)
    first = await availability(request, [1])  # variant 1 is now cached
    assert first[1].stock.total_on_hand == 10 and stock.calls == 1
    both = await availability(request, [1, 2])  # 2 is fetched; meanwhile 1 is forgotten
    assert (both[1].stock.total_on_hand, both[2].stock.total_on_hand) == (10, 20)
    assert stock.calls == 2
    again = await availability(request, [1])  # forgotten: fetched again, not served stale
    assert again[1].stock.total_on_hand == 10 and stock.calls == 3
