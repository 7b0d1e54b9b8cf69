"""The cart service's public interface: `CartService`, the operations on carts (line items,
coupons) and the catalog that the gateway (and the demo's loaders) call, with their answers.

The interface only: the implementation is services/cart/operations.py (`CartOperations`),
reached in-process or over HTTP through shared/rpc.py; both ways answer JSON values (money as
decimal strings) and refuse with a `shared.errors.DomainError`.
"""
from __future__ import annotations

from typing import Any, Protocol, TypedDict

from shared.steps import StepReply


class LineItem(TypedDict):
    id: int
    variant_id: int
    quantity: int
    price: str
    total: str
    variant: dict[str, Any]  # shared/contracts/cart.py:VariantSnapshot, as JSON


class LineAnswer(TypedDict):
    line_item: LineItem | None
    events: list[str]


class Ack(TypedDict):
    events: list[str]


class LineFound(TypedDict):
    order_number: str


class Variant(TypedDict):
    id: int
    product_id: int
    sku: str
    name: str
    options_text: str
    track_inventory: bool
    is_master: bool
    is_destroyed: bool
    price: str | None  # in the currency asked for; None where the variant has no price in it
    slug: str
    description: str


class Discarded(TypedDict):
    variant_id: int


class Product(TypedDict):
    id: int
    name: str
    slug: str
    description: str


class CatalogLoaded(TypedDict):
    products: int


class PromotionsLoaded(TypedDict):
    promotions: int


class CartService(Protocol):
    async def add_line_item(self, number: str, *, variant_id: Any, quantity: Any = 1,
                            currency: str = "USD") -> LineAnswer: ...

    async def set_line_quantity(self, number: str, *, line_id: int, quantity: Any = None) -> LineAnswer: ...

    async def remove_line_item(self, number: str, *, line_id: int) -> Ack: ...

    async def empty_cart(self, number: str) -> Ack: ...

    async def apply_coupon(self, number: str, *, code: str, currency: str) -> Ack:
        """Applies a coupon to the cart of an order in `currency` (a flat coupon only in its own)."""
        ...

    async def remove_coupon(self, number: str, *, code: str) -> Ack: ...

    async def find_line(self, *, line_id: int) -> LineFound:
        """Which order (cart) a line item belongs to; line ids are global."""
        ...

    async def list_variants(self, *, currency: str = "USD", include_discarded: bool = False,
                            variant_id: int | None = None) -> list[Variant]:
        """The catalog's variants (or the one `variant_id`) priced in `currency` (price None where
        they are not); the discarded ones only when asked for (Solidus's admin `show_deleted`)."""
        ...

    async def discard_variant(self, *, variant_id: Any = None) -> Discarded:
        """Solidus's variant destroy (a soft delete): no longer listed nor added to carts; the
        orders holding it cannot be completed (Cart.lock)."""
        ...

    async def discarded_among(self, *, variant_ids: list[int]) -> list[int]:
        """Which of `variant_ids` are discarded."""
        ...

    async def list_products(self) -> list[Product]: ...

    # -- reference data (demo data, imports): admin operations, idempotent upserts ----------
    async def load_catalog(self, *, products: list[dict[str, Any]]) -> CatalogLoaded:
        """Upserts products with their variants and prices."""
        ...

    async def load_promotions(self, *, promotions: list[dict[str, Any]]) -> PromotionsLoaded:
        """Upserts promotions (coupon codes)."""
        ...

    # -- the completion saga's step 1 (services/order/saga.py); the saga's id is the request id --
    async def lock_cart(self, number: str, *, saga_id: str, lines: list[dict[str, Any]]) -> StepReply:
        """Locks the cart if it still holds `lines` (`{variant_id, quantity, track_inventory}`),
        reserving its limited coupons: `cart.CartLocked`, or `cart.CartLockRefused`. Idempotent by
        `saga_id`: a repeat answers the first answer; after `unlock_cart` it does nothing."""
        ...

    async def unlock_cart(self, number: str, *, saga_id: str) -> StepReply:
        """Undoes `lock_cart` (answered even when nothing was locked): `cart.CartUnlocked`."""
        ...
