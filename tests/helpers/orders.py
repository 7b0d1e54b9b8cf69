"""Comparing what an order's events made of it, apart from what is live about its variants."""
from __future__ import annotations

# The stock a variant shows is the catalogue's now, read through a cache at most
# STOCK_DISPLAY_MAX_AGE_MS old, so two reads of an unchanged order may differ in it.
LIVE_STOCK_FIELDS = frozenset({"total_on_hand", "in_stock", "inventory"})


def without_live_stock(value):
    """`value` (any rendered answer, or a tuple of them) without the variants' live stock."""
    if isinstance(value, dict):
        return {k: without_live_stock(v) for k, v in value.items() if k not in LIVE_STOCK_FIELDS}
    if isinstance(value, (list, tuple)):
        return type(value)(without_live_stock(v) for v in value)
    return value
