"""Events of the cart service (topic `cart.events`, key = order number)."""
from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from shared.contracts.dead_letters import DeadLetterNotice
from shared.envelope import DomainEvent


class VariantSnapshot(BaseModel):
    """What a line item shows of its variant, as it was when the line was added."""
    model_config = ConfigDict(frozen=True)
    id: int
    product_id: int
    name: str
    sku: str
    price: Decimal
    track_inventory: bool
    options_text: str = ""


class LineItemAdded(DomainEvent):
    event_type = "cart.LineItemAdded"
    order_number: str
    line_item_id: int
    variant: VariantSnapshot
    quantity: int
    price: Decimal


class LineItemQuantityChanged(DomainEvent):
    event_type = "cart.LineItemQuantityChanged"
    order_number: str
    line_item_id: int
    quantity: int


class LineItemRemoved(DomainEvent):
    event_type = "cart.LineItemRemoved"
    order_number: str
    line_item_id: int


class CartEmptied(DomainEvent):
    event_type = "cart.CartEmptied"
    order_number: str


class PromotionAdjustment(BaseModel):
    model_config = ConfigDict(frozen=True)
    promotion_id: int
    code: str
    label: str
    amount: Decimal  # negative: a discount


class CartRepriced(DomainEvent):
    """The cart's totals after any change: the single source of item and promotion totals."""
    event_type = "cart.CartRepriced"
    order_number: str
    item_total: Decimal
    adjustment_total: Decimal
    total_quantity: int
    item_count: int
    adjustments: list[PromotionAdjustment] = []
    # True when the lines themselves changed (not a coupon or an empty): an order in
    # checkout restarts its checkout then, as Solidus does.
    lines_changed: bool = False


class PromotionApplied(DomainEvent):
    event_type = "cart.PromotionApplied"
    order_number: str
    promotion_id: int
    code: str
    name: str
    kind: str  # "order_flat" (value off the order) or "items_percent" (value % off the items)
    value: Decimal
    currency: str | None = None  # an order_flat value's currency (older events: none recorded)


class PromotionRemoved(DomainEvent):
    event_type = "cart.PromotionRemoved"
    order_number: str
    code: str


class LockedLine(BaseModel):
    """A line as the cart locked it: what is charged and shipped."""
    model_config = ConfigDict(frozen=True)
    line_item_id: int
    variant_id: int
    quantity: int
    price: Decimal
    track_inventory: bool


class CartLocked(DomainEvent):
    """Answer to order.CartLockRequested: the cart refuses changes from now on (until
    `CartUnlocked`; for ever once its order completes). Its lines, adjustments and totals
    are exactly what the completion charges and ships; limited coupons are reserved."""
    event_type = "cart.CartLocked"
    order_number: str
    request_id: str
    lines: list[LockedLine]
    item_total: Decimal
    adjustment_total: Decimal
    adjustments: list[PromotionAdjustment] = []
    reserved_promotion_ids: list[int] = []


class CartLockRefused(DomainEvent):
    """Answer to order.CartLockRequested: the cart was not locked. `cart_changed`: its lines
    are no longer those the customer confirmed. `promotions_ineligible`: coupons expired or
    were used up by other orders since they were applied; they are removed (`removed_codes`,
    with `PromotionRemoved` and `CartRepriced` in the same append), as Solidus does.
    `variants_discarded`: some lines hold variants discarded from the catalog since."""
    event_type = "cart.CartLockRefused"
    order_number: str
    request_id: str
    code: str  # "cart_changed" | "promotions_ineligible" | "variants_discarded"
    message: str
    removed_codes: list[str] = []
    item_count: int  # lines the cart holds now (none: the order goes back to `cart`)


class CartUnlocked(DomainEvent):
    """Answer to order.CartUnlockRequested (also when the cart was not locked by it):
    changes are accepted again and the reserved coupons are free for other orders."""
    event_type = "cart.CartUnlocked"
    order_number: str
    request_id: str
    released_promotion_ids: list[int] = []


class MessageDeadLettered(DeadLetterNotice):
    event_type = "cart.MessageDeadLettered"
