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
    # Of `quantity`, the units no location has on hand: sold on backorder (Solidus's inventory
    # unit state `backordered`; the rest are `on_hand`). Added later: absent means 0.
    backordered: int = 0


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
    # Where the rates were estimated for (added later: absent in older events), so a shipment
    # can be re-rated for another method (Solidus's select_shipping_method).
    country_iso: str | None = None
    currency: str | None = None
    # The sequence of the order.DeliveryRequested in the order's stream (added later: absent in
    # older events): a request older than one answered already is not answered any more.
    requested_at: int | None = None


class ShipmentsUnavailable(DomainEvent):
    event_type = "shipping.ShipmentsUnavailable"
    order_number: str
    request_id: str
    code: str  # "no_rates" | "insufficient_stock"
    message: str
    # The sequence of the order.DeliveryRequested in the order's stream (added later: absent in
    # older events): a request older than one answered already is not answered any more.
    requested_at: int | None = None


class ShippingRateSelected(DomainEvent):
    event_type = "shipping.ShippingRateSelected"
    order_number: str
    shipment_number: str
    rate_id: int
    cost: Decimal


class ShipmentRatesReplaced(DomainEvent):
    """Solidus's select_shipping_method: the shipment's rates are replaced by the one rate of
    the chosen method, selected."""
    event_type = "shipping.ShipmentRatesReplaced"
    order_number: str
    shipment_number: str
    rates: list[ShippingRate]


class ShipmentsDiscarded(DomainEvent):
    """The cart changed or was emptied: pending shipments are gone (Solidus deletes them)."""
    event_type = "shipping.ShipmentsDiscarded"
    order_number: str


class AllocatedUnit(BaseModel):
    """Units of a variant taken from a location's stock for a shipment (`count_on_hand` went
    down by `quantity`, below zero by the `backordered` part). The last two fields were added
    later: absent in older events, where nothing was backordered."""
    model_config = ConfigDict(frozen=True)
    stock_location_id: int
    variant_id: int
    quantity: int
    backordered: int = 0
    shipment_number: str | None = None


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
    # "insufficient_stock", or "shipments_outdated" when the shipments no longer hold the
    # locked lines (added later: absent in older events, which were all insufficient_stock).
    code: str = "insufficient_stock"


class StockReleased(DomainEvent):
    """What a request had allocated is back in stock (answer to order.StockReleaseRequested,
    `units` empty when it had allocated nothing; also after order.OrderCanceled)."""
    event_type = "shipping.StockReleased"
    order_number: str
    request_id: str
    units: list[AllocatedUnit]


class MessageDeadLettered(DeadLetterNotice):
    event_type = "shipping.MessageDeadLettered"


class LocationStock(BaseModel):
    id: int  # the stock item's
    stock_location_id: int
    stock_location_name: str
    count_on_hand: int
    backorderable: bool


class StockLevel(BaseModel):
    """A variant's stock as the shipping service reports it (its `stock` operation, not an
    event): the units on hand over the active locations (negative once backordered), whether
    any location may sell it beyond that, and each location's stock item."""
    total_on_hand: int = 0
    backorderable: bool = False
    items: list[LocationStock] = []

    def in_stock(self, track_inventory: bool) -> bool:
        """Solidus's `in_stock?` (can supply one unit): untracked variants always are."""
        return not track_inventory or self.total_on_hand > 0 or self.backorderable
