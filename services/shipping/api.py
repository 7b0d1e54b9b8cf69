"""The shipping service's public interface: `ShippingService`, the operations on shipments,
stock and shipping rates that the gateway (and the demo's loaders) call, with their answers.

The interface only: the implementation is services/shipping/operations.py
(`ShippingOperations`), reached in-process or over HTTP through shared/rpc.py; both ways answer
JSON values (money as decimal strings) and refuse with a `shared.errors.DomainError`.
"""
from __future__ import annotations

from typing import Any, Protocol, TypedDict

from shared.steps import StepReply


class Ack(TypedDict):
    events: list[str]


class ShipmentFound(TypedDict):
    order_number: str
    shipment: dict[str, Any]  # services/shipping/domain.py:Shipment, as JSON


class LocationStockJson(TypedDict):
    id: int  # the stock item's
    stock_location_id: int
    stock_location_name: str
    count_on_hand: int
    backorderable: bool


class StockLevelJson(TypedDict):
    """shared/contracts/shipping.py:StockLevel, as JSON."""
    total_on_hand: int
    backorderable: bool
    items: list[LocationStockJson]


class EstimatedRate(TypedDict):
    shipping_method_id: int
    name: str
    code: str
    cost: str
    zone: str


class StockLine(TypedDict):
    """A line a basket would hold: `quantity` counts the units it holds already."""
    variant_id: int
    quantity: int
    track_inventory: bool


class ReferenceLoaded(TypedDict):
    zones: int
    stock_locations: int
    shipping_methods: int


class ShippingService(Protocol):
    async def select_rate(self, number: str, *, shipment_number: str, rate_id: Any = None) -> Ack: ...

    async def select_method(self, number: str, *, shipment_number: str, shipping_method_id: Any = None) -> Ack: ...

    async def find_shipment(self, *, shipment_number: str) -> ShipmentFound:
        """Which order a shipment belongs to (shipment numbers are global), and the shipment."""
        ...

    async def stock(self, *, variant_ids: list[int]) -> dict[str, StockLevelJson]:
        """Each variant's stock level (by variant id) over the active locations; a variant stocked
        nowhere has none on hand and cannot be backordered."""
        ...

    async def estimated_rates(self, *, country_iso: str, currency: str = "USD") -> list[EstimatedRate]:
        """Every method that could ship to the country (Solidus's estimated_rates includes the
        ones not available to users), cheapest first."""
        ...

    # -- reference data (demo data, imports): an admin operation, idempotent upserts --------
    async def load_reference(self, *, zones: list[dict[str, Any]] | None = None,
                             stock_locations: list[dict[str, Any]] | None = None,
                             shipping_methods: list[dict[str, Any]] | None = None) -> ReferenceLoaded:
        """Upserts zones, stock locations (with stock) and shipping methods."""
        ...

    async def unavailable(self, *, lines: list[StockLine]) -> list[int]:
        """The positions in `lines` of those stock cannot cover now (tracked, not backorderable,
        more than on hand over the active locations): services/shipping/domain.py:uncovered."""
        ...

    # -- the order's delivery request (services/order/delivery.py), by call -------------------
    async def build_shipments(self, number: str, *, request_id: str, ship_address: dict[str, Any], currency: str,
                              lines: list[dict[str, Any]], requested_at: int | None = None,
                              first: bool = False) -> StepReply:
        """Answers the order's DeliveryRequested `request_id` (`requested_at`: its sequence in the
        order's stream): `shipping.ShipmentsBuilt` (shipments and rates for `lines` to
        `ship_address`) or `shipping.ShipmentsUnavailable`. Idempotent by `request_id`: asked again
        (or after the request came from Kafka) it answers the first answer; a request older than
        one answered already is answered with nothing. `first`: the order's first request, so
        its shipments' stream is taken to be new (not read; if it exists, the step runs again on it)."""
        ...

    # -- the completion saga's step 2 (services/order/saga.py); the saga's id is the request id --
    async def allocate_stock(self, number: str, *, saga_id: str, lines: list[dict[str, Any]]) -> StepReply:
        """Takes exactly the locked `lines` from stock, all or none: `shipping.StockAllocated`, or
        `shipping.StockAllocationFailed`. Idempotent by `saga_id`; after `release_stock` it does nothing."""
        ...

    async def release_stock(self, number: str, *, saga_id: str) -> StepReply:
        """Undoes `allocate_stock` (answered even when nothing was taken): `shipping.StockReleased`."""
        ...
