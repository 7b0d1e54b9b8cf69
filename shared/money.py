"""Money rules both the services and the gateway's dialects apply. Money is always Decimal."""
from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

CENT = Decimal("0.01")


def truncate_to_cents(amount: Decimal) -> Decimal:
    """Tax as GetCandy computes it: cut down to the cent, never rounded up."""
    return amount.quantize(CENT, rounding=ROUND_DOWN)
