"""GetCandy's ids. In GetCandy a guest's basket and order are reached by id alone, so an id
is a key to a customer's address: it must not be guessable.

The original's 8-character hashids encode sequential numbers with a salt that is in its
source, so neighbouring ids are a loop away. Here an order, basket or basket line id is the
hashid of its number followed by a 20-character tag, an HMAC of that number under this
install's secret (`TILLSTREAM_ID_SECRET`): ~103 bits nobody can compute without the secret,
checked in constant time. Catalog ids (variants, shipping prices, payment types, discounts)
name nothing private and stay plain hashids, as in GetCandy.

`GETCANDY_LEGACY_IDS=true` also resolves the old untagged ids (for data created before),
bringing back their weakness: off unless needed.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from hashids import Hashids

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
TAG_LENGTH = 20  # base-36 characters: 36**20 ≈ 2**103


def id_secret() -> bytes:
    """The install's secret; there is no default, so an install without one fails closed."""
    secret = os.environ.get("TILLSTREAM_ID_SECRET", "")
    if len(secret) < 16:
        raise RuntimeError("TILLSTREAM_ID_SECRET is not set (16 characters or more): GetCandy ids need it")
    return secret.encode()


def legacy_ids_allowed() -> bool:
    return os.environ.get("GETCANDY_LEGACY_IDS", "false").lower() in ("1", "true", "yes")


class KeyedIds:
    """Ids of one kind ("basket", "order"), with the `encode` / `decode` of hashids."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.hashids = Hashids(salt=kind, min_length=8, alphabet=ALPHABET)

    def _tag(self, number: int) -> str:
        digest = hmac.new(id_secret(), f"{self.kind}:{number}".encode(), hashlib.sha256).digest()
        value, tag = int.from_bytes(digest[:16], "big"), []
        for _ in range(TAG_LENGTH):
            value, digit = divmod(value, 36)
            tag.append(ALPHABET[digit])
        return "".join(tag)

    def encode(self, number: int) -> str:
        return self.hashids.encode(number) + self._tag(number)

    def decode(self, value: Any) -> tuple[int, ...]:
        if not isinstance(value, str) or len(value) > 64:
            return ()
        if len(value) > TAG_LENGTH:
            decoded = self.hashids.decode(value[:-TAG_LENGTH])
            if len(decoded) == 1 and hmac.compare_digest(value[-TAG_LENGTH:], self._tag(decoded[0])):
                return decoded
        if legacy_ids_allowed():
            return self.hashids.decode(value)
        return ()


BASKETS = KeyedIds("basket")  # baskets and basket lines
ORDERS = KeyedIds("order")    # orders and their lines
MAIN = Hashids(salt="main", min_length=8, alphabet=ALPHABET)  # catalog: variants, shipping prices, payment types


def decode(hashids: Hashids | KeyedIds, value: Any) -> int | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    decoded = hashids.decode(value)
    return decoded[0] if len(decoded) == 1 else None


def order_number(hashids: KeyedIds, value: Any) -> str | None:
    """The Tillstream order number a basket or order id names (a basket and its order are
    one Tillstream order under two ids)."""
    number = decode(hashids, value)
    return None if number is None else f"R{number:09d}"


def number_id(hashids: KeyedIds, number: str) -> str:
    return hashids.encode(int(number[1:]))
