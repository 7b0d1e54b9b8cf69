"""Events of the shipping service (topic `shipping.events`, key = order number)."""
from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from shared.contracts.dead_letters import DeadLetterNotice
from shared.envelope import DomainEvent, upcaster


class ShippingRate(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    shipping_method_id: int
    name: str
    code: str
    cost: Decimal
    selected: bool


class ManifestItem(BaseModel):
    model_config = ConfigDict(frozen=True)
    variant_id: int
    quantity: int


class Shipment(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    number: str
    stock_location_id: int
    stock_location_name: str
    state: str
    rates: list[ShippingRate]
    manifest: list[ManifestItem]

    @property
    def cost(self) -> Decimal:
        return next((r.cost for r in self.rates if r.selected), Decimal("0"))


class ShipmentsBuilt(DomainEvent):
    event_type = "shipping.ShipmentsBuilt"
    order_number: str
    request_id: str  # the order.DeliveryRequested this answers
    shipments: list[Shipment]


class ShipmentsUnavailable(DomainEvent):
    event_type = "shipping.ShipmentsUnavailable"
    order_number: str
    request_id: str
    code: str  # "no_rates" | "insufficient_stock"
    message: str


class ShippingRateSelected(DomainEvent):
    event_type = "shipping.ShippingRateSelected"
    order_number: str
    shipment_number: str
    rate_id: int
    cost: Decimal


class ShipmentsDiscarded(DomainEvent):
    """The cart changed or was emptied: pending shipments are gone (Solidus deletes them)."""
    event_type = "shipping.ShipmentsDiscarded"
    order_number: str


class AllocatedUnit(BaseModel):
    model_config = ConfigDict(frozen=True)
    stock_location_id: int
    variant_id: int
    quantity: int


class StockAllocatedV1(DomainEvent):
    """Superseded by v2 (stored v1 events are read as v2, with no shipping cost known)."""
    event_type = "shipping.StockAllocated"
    event_version = 1
    order_number: str
    request_id: str
    units: list[AllocatedUnit]


class StockAllocated(DomainEvent):
    """Answer to order.StockAllocationRequested: every unit is taken from stock, and the
    shipments' selected rates are fixed from now on (`ship_total` is what they cost)."""
    event_type = "shipping.StockAllocated"
    event_version = 2
    order_number: str
    request_id: str
    units: list[AllocatedUnit]
    ship_total: Decimal | None  # None only for v1 events, which did not say


@upcaster("shipping.StockAllocated", 1)
def _allocation_with_unknown_shipping_cost(payload: dict) -> dict:
    return {**payload, "ship_total": None}


class StockAllocationFailed(DomainEvent):
    event_type = "shipping.StockAllocationFailed"
    order_number: str
    request_id: str
    message: str


class StockReleased(DomainEvent):
    """What a request had allocated is back in stock (answer to order.StockReleaseRequested,
    `units` empty when it had allocated nothing; also after order.OrderCanceled)."""
    event_type = "shipping.StockReleased"
    order_number: str
    request_id: str
    units: list[AllocatedUnit]


class MessageDeadLettered(DeadLetterNotice):
    event_type = "shipping.MessageDeadLettered"
