"""The OrderShipments aggregate (one per order number). Pure: no I/O.

Building shipments follows Solidus's simple coordinator: one package per active stock
location holding the units, rated by every method whose zone contains the ship address;
rates sorted by cost, the cheapest selected (or the previously selected method, if it is
still offered).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal

from shared.aggregate import Aggregate, DomainError, not_found
from shared.contracts.shipping import (
    AllocatedUnit, ManifestItem, Shipment, ShipmentsBuilt, ShipmentsDiscarded, ShipmentsUnavailable, ShippingRate,
    ShippingRateSelected, StockAllocated, StockAllocationFailed, StockReleased,
)

NO_RATES = "We are unable to calculate shipping rates for the selected items."
INSUFFICIENT_STOCK = "Quantity is not available for items in your order"


@dataclass(frozen=True)
class Line:
    variant_id: int
    quantity: int
    track_inventory: bool


@dataclass(frozen=True)
class StockLocation:
    id: int
    name: str
    on_hand: dict[int, int]        # variant id → units
    backorderable: frozenset[int]  # variant ids that may go below zero


@dataclass(frozen=True)
class Method:
    id: int
    name: str
    code: str
    cost: Decimal
    zone: str = ""


def new_shipment_number() -> str:
    return "H" + "".join(secrets.choice("0123456789") for _ in range(11))


def plan_packages(lines: list[Line], locations: list[StockLocation]) -> list[tuple[StockLocation, list[ManifestItem]]]:
    """Allocate every unit to a location (on hand first, then backorder) or raise."""
    remaining = {line.variant_id: line.quantity for line in lines}
    tracked = {line.variant_id for line in lines if line.track_inventory}
    packages: dict[int, dict[int, int]] = {}
    for pass_ in ("on_hand", "backorder"):
        for location in locations:
            for variant_id, wanted in remaining.items():
                if wanted == 0:
                    continue
                if variant_id not in tracked:
                    take = wanted if pass_ == "on_hand" else 0
                elif pass_ == "on_hand":
                    take = min(wanted, max(location.on_hand.get(variant_id, 0), 0))
                else:
                    take = wanted if variant_id in location.backorderable else 0
                if take:
                    packages.setdefault(location.id, {}).setdefault(variant_id, 0)
                    packages[location.id][variant_id] += take
                    remaining[variant_id] -= take
    if any(remaining.values()):
        raise DomainError("insufficient_stock", INSUFFICIENT_STOCK)
    by_id = {location.id: location for location in locations}
    return [(by_id[lid], [ManifestItem(variant_id=v, quantity=q) for v, q in sorted(items.items())])
            for lid, items in packages.items()]


class OrderShipments(Aggregate):
    aggregate_type = "OrderShipments"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.shipments: list[Shipment] = []
        self.selected_method_ids: set[int] = set()
        self.allocations: dict[str, list[AllocatedUnit]] = {}  # request id → units taken from stock
        self.held: set[str] = set()      # allocations not released: the shipments are fixed
        self.released: set[str] = set()  # requests whose release was answered

    def build(self, request_id: str, lines: list[Line], locations: list[StockLocation], methods: list[Method],
              ids: list[int]) -> None:
        """Answer a DeliveryRequested: shipments with rates, or why there can be none."""
        try:
            packages = plan_packages(lines, locations) if lines else []
        except DomainError as refusal:
            self._record(ShipmentsUnavailable(order_number=self.id, request_id=request_id,
                                              code=refusal.code, message=refusal.message))
            return
        if not packages or not methods:
            self._record(ShipmentsUnavailable(order_number=self.id, request_id=request_id, code="no_rates",
                                              message=NO_RATES))
            return
        ids = iter(ids)  # fresh ids for shipments and rates
        ranked = sorted(methods, key=lambda m: (m.cost, m.id))
        keep = next((m.id for m in ranked if m.id in self.selected_method_ids), ranked[0].id)
        shipments = [
            Shipment(id=next(ids), number=new_shipment_number(), stock_location_id=location.id,
                     stock_location_name=location.name, state="pending", manifest=manifest,
                     rates=[ShippingRate(id=next(ids), shipping_method_id=m.id, name=m.name, code=m.code,
                                         cost=m.cost, selected=m.id == keep) for m in ranked])
            for location, manifest in packages
        ]
        self._record(ShipmentsBuilt(order_number=self.id, request_id=request_id, shipments=shipments))

    def select_rate(self, shipment_number: str, rate_id: int) -> None:
        if self.held:
            raise DomainError("shipments_locked", "The order is being completed or has been placed;"
                              " its shipments cannot change.", status=409)
        shipment = self.find(shipment_number)
        rate = next((r for r in shipment.rates if r.id == rate_id), None)
        if rate is None:
            raise DomainError("invalid_rate", "is invalid", field="shipments.selected_shipping_rate_id")
        if not rate.selected:
            self._record(ShippingRateSelected(order_number=self.id, shipment_number=shipment_number,
                                              rate_id=rate.id, cost=rate.cost))

    def select_method(self, shipment_number: str, method_id: int) -> None:
        shipment = self.find(shipment_number)
        rate = next((r for r in shipment.rates if r.shipping_method_id == method_id), None)
        if rate is None:
            raise not_found("shipping method")
        self.select_rate(shipment_number, rate.id)

    def allocation_answered(self, request_id: str) -> bool:
        """Answered already, or compensated before it came (a command replayed late from the DLQ)."""
        return request_id in self.allocations or request_id in self.released

    def record_allocation(self, request_id: str, units: list[AllocatedUnit] | None) -> None:
        """The stock decrement happened in the same transaction (see commands); None: it could not.
        Allocated, the shipments and their selected rates are fixed: `ship_total` is their cost."""
        if self.allocation_answered(request_id):
            return
        if units is None:
            self._record(StockAllocationFailed(order_number=self.id, request_id=request_id,
                                               message=INSUFFICIENT_STOCK))
        else:
            self._record(StockAllocated(order_number=self.id, request_id=request_id, units=units,
                                        ship_total=sum((s.cost for s in self.shipments), Decimal(0))))

    def release(self, request_id: str) -> list[AllocatedUnit]:
        """Units to put back, answered once (with none if the request allocated nothing)."""
        if request_id in self.released:
            return []
        units = self.allocations.get(request_id) or []
        self._record(StockReleased(order_number=self.id, request_id=request_id, units=units))
        return units

    def discard(self) -> None:
        if self.shipments:
            self._record(ShipmentsDiscarded(order_number=self.id))

    def find(self, shipment_number: str) -> Shipment:
        shipment = next((s for s in self.shipments if s.number == shipment_number), None)
        if shipment is None:
            raise not_found("shipment")
        return shipment

    def _on_ShipmentsBuilt(self, e: ShipmentsBuilt) -> None:
        self.shipments = list(e.shipments)

    def _on_ShipmentsUnavailable(self, e: ShipmentsUnavailable) -> None:
        self.shipments = []

    def _on_ShippingRateSelected(self, e: ShippingRateSelected) -> None:
        self.shipments = [
            s.model_copy(update={"rates": [r.model_copy(update={"selected": r.id == e.rate_id}) for r in s.rates]})
            if s.number == e.shipment_number else s for s in self.shipments]
        self.selected_method_ids = {r.shipping_method_id for s in self.shipments for r in s.rates if r.selected}

    def _on_ShipmentsDiscarded(self, e: ShipmentsDiscarded) -> None:
        self.shipments = []

    def _on_StockAllocated(self, e: StockAllocated) -> None:
        self.allocations[e.request_id] = list(e.units)
        self.held.add(e.request_id)

    def _on_StockAllocationFailed(self, e: StockAllocationFailed) -> None:
        self.allocations[e.request_id] = []

    def _on_StockReleased(self, e: StockReleased) -> None:
        self.released.add(e.request_id)
        self.held.discard(e.request_id)
