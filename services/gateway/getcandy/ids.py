"""GetCandy's ids. In GetCandy a guest's basket and order are reached by id alone, so an id
is a key to a customer's address: it must not be guessable, and it must name one thing.

The original's 8-character hashids encode sequential numbers with a salt that is in its
source, so neighbouring ids are a loop away. Here a basket, basket line, order, order line
or shipping line id is the hashid of its number followed by a 20-character tag, an HMAC
under this install's secret (`TILLSTREAM_ID_SECRET`) of `getcandy:<entity>:<number>`:
~103 bits nobody can compute without the secret, checked in constant time. Each entity
has its own tag domain, so an id minted for one (a basket line's, an order line's) is no
id of another (a basket's, an order's), even where their numbers coincide. Catalog ids
(variants, shipping prices, payment types, discounts) name nothing private and stay plain
hashids, as in GetCandy.

`GETCANDY_LEGACY_IDS=true` also resolves ids issued before: the untagged ones of the
original and the tags of one domain per kind (`basket:<n>`, `order:<n>`), bringing back
their weaknesses (guessable; a line's id opening a basket or an order): off unless needed.
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
    """Ids of one entity, with the `encode` / `decode` of hashids. `salt` is the hashids
    salt of the visible part (shared by an entity and its lines, as before); the tag's
    domain is the dialect and the entity alone."""

    def __init__(self, entity: str, salt: str) -> None:
        self.entity = entity
        self.domain = f"getcandy:{entity}"
        self.legacy_domain = salt  # the one domain a kind's ids and its lines' ids shared
        self.hashids = Hashids(salt=salt, min_length=8, alphabet=ALPHABET)

    def _tag(self, number: int, domain: str | None = None) -> str:
        message = f"{domain or self.domain}:{number}".encode()
        digest = hmac.new(id_secret(), message, hashlib.sha256).digest()
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
        legacy = legacy_ids_allowed()
        if len(value) > TAG_LENGTH:
            decoded = self.hashids.decode(value[:-TAG_LENGTH])
            if len(decoded) == 1:
                tag = value[-TAG_LENGTH:]
                if hmac.compare_digest(tag, self._tag(decoded[0])):
                    return decoded
                if legacy and hmac.compare_digest(tag, self._tag(decoded[0], self.legacy_domain)):
                    return decoded
        if legacy:
            return self.hashids.decode(value)
        return ()


BASKETS = KeyedIds("basket", salt="basket")
BASKET_LINES = KeyedIds("basket_line", salt="basket")
ORDERS = KeyedIds("order", salt="order")
ORDER_LINES = KeyedIds("order_line", salt="order")
SHIPPING_LINES = KeyedIds("shipping_line", salt="order")
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
