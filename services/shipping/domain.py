"""The OrderShipments aggregate (one per order number). Pure: no I/O.

Building shipments follows Solidus's simple coordinator: each unit comes from the first
active stock location that has it on hand, or else from the first that may backorder it;
one package per location and per state (on hand, backordered), each rated by every method
whose zone contains the ship address; rates sorted by cost, the cheapest selected (or the
previously selected method, if it is still offered).

Completing takes the units from the locations the shipments were planned at: on hand as far
as the location has them now, backordered beyond that where the location allows it (its
count goes below zero, as Solidus's does), refused otherwise.
"""
from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from shared.aggregate import Aggregate, DomainError, not_found
from shared.contracts.shipping import (
    AllocatedUnit,
    ManifestItem,
    Shipment,
    ShipmentRatesReplaced,
    ShipmentsBuilt,
    ShipmentsDiscarded,
    ShipmentsUnavailable,
    ShippingRate,
    ShippingRateSelected,
    StockAllocated,
    StockAllocationFailed,
    StockLevel,
    StockReleased,
)

NO_RATES = "We are unable to calculate shipping rates for the selected items."
INSUFFICIENT_STOCK = "Quantity is not available for items in your order"
SHIPMENTS_OUTDATED = "The order's shipments no longer hold its items. Please check the order and try again."


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


def uncovered(lines: Sequence[Line], levels: Mapping[int, StockLevel]) -> list[int]:
    """The positions of the lines stock cannot cover now (GetCandy's basket check): a tracked
    variant wanted beyond its units on hand over the active locations, unless one of them may
    backorder it. A variant stocked nowhere has none on hand."""
    return [n for n, line in enumerate(lines)
            if line.track_inventory and not _covers(levels.get(line.variant_id) or StockLevel(), line.quantity)]


def _covers(level: StockLevel, quantity: int) -> bool:
    return level.backorderable or quantity <= level.total_on_hand


def new_shipment_number() -> str:
    return "H" + "".join(secrets.choice("0123456789") for _ in range(11))


def plan_packages(lines: list[Line], locations: list[StockLocation]) -> list[tuple[StockLocation, list[ManifestItem]]]:
    """Every unit to a location, on hand first, then backordered; or InsufficientStock.
    One package per location and state: a backordered package ships on its own."""
    remaining = {line.variant_id: 0 for line in lines}
    for line in lines:
        remaining[line.variant_id] += line.quantity
    tracked = {line.variant_id for line in lines if line.track_inventory}
    on_hand: dict[int, dict[int, int]] = {}
    backordered: dict[int, dict[int, int]] = {}
    for location in locations:
        for variant_id, wanted in remaining.items():
            take = wanted if variant_id not in tracked else min(wanted, max(location.on_hand.get(variant_id, 0), 0))
            if take:
                on_hand.setdefault(location.id, {})[variant_id] = take
                remaining[variant_id] -= take
    for location in locations:
        for variant_id, wanted in remaining.items():
            if wanted and variant_id in location.backorderable:
                backordered.setdefault(location.id, {})[variant_id] = wanted
                remaining[variant_id] = 0
    if any(remaining.values()):
        raise DomainError("insufficient_stock", INSUFFICIENT_STOCK)
    packages = []
    for location in locations:
        if location.id in on_hand:
            packages.append((location, [ManifestItem(variant_id=v, quantity=q)
                                        for v, q in sorted(on_hand[location.id].items())]))
        if location.id in backordered:
            packages.append((location, [ManifestItem(variant_id=v, quantity=q, backordered=q)
                                        for v, q in sorted(backordered[location.id].items())]))
    return packages


def take_units(shipments: list[Shipment], lines: list[Line],
               locations: list[StockLocation]) -> list[AllocatedUnit]:
    """The units completing takes from stock, from where each shipment was planned; raises
    (insufficient_stock, shipments_outdated) when that cannot be."""
    wanted: dict[int, int] = {}
    for line in lines:
        wanted[line.variant_id] = wanted.get(line.variant_id, 0) + line.quantity
    planned: dict[int, int] = {}
    for shipment in shipments:
        for item in shipment.manifest:
            planned[item.variant_id] = planned.get(item.variant_id, 0) + item.quantity
    if planned != {v: q for v, q in wanted.items() if q}:
        raise DomainError("shipments_outdated", SHIPMENTS_OUTDATED)
    tracked = {line.variant_id for line in lines if line.track_inventory}
    by_id = {location.id: location for location in locations}
    left = {(location.id, v): n for location in locations for v, n in location.on_hand.items()}
    units = []
    for shipment in shipments:
        location = by_id.get(shipment.stock_location_id)
        for item in shipment.manifest:
            if item.variant_id not in tracked:
                continue
            key = (shipment.stock_location_id, item.variant_id)
            short = item.quantity - min(item.quantity, max(left.get(key, 0), 0))
            if location is None or (short and item.variant_id not in location.backorderable):
                raise DomainError("insufficient_stock", INSUFFICIENT_STOCK)
            left[key] = left.get(key, 0) - item.quantity
            units.append(AllocatedUnit(stock_location_id=location.id, variant_id=item.variant_id,
                                       quantity=item.quantity, backordered=short, shipment_number=shipment.number))
    return units


class OrderShipments(Aggregate):
    aggregate_type = "OrderShipments"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.shipments: list[Shipment] = []
        self.destination: tuple[str, str] | None = None  # (country ISO, currency) the rates are for
        self.selected_method_ids: set[int] = set()
        self.allocations: dict[str, list[AllocatedUnit]] = {}  # request id → units taken from stock
        self.held: set[str] = set()      # allocations not released: the shipments are fixed
        self.released: set[str] = set()  # requests whose release was answered
        # Delivery requests answered (built or refused): asked again (the order's call, then its
        # event from Kafka, or a call repeated) the first answer stands.
        self.delivery_answered: set[str] = set()
        self.built_for: str | None = None  # the delivery request the shipments were built for
        self.latest_request_at: int | None = None  # the order-stream sequence of the latest request answered

    def build(self, request_id: str, lines: list[Line], locations: list[StockLocation], methods: list[Method],
              ids: list[int], *, country_iso: str, currency: str, requested_at: int | None = None) -> None:
        """Answer a DeliveryRequested: shipments with rates, or why there can be none; once.
        `requested_at`: its sequence in the order's stream. A request older than one answered
        already (its event read from Kafka after the order's call for a newer one: the order has
        moved past it) is not answered: its shipments would replace the newer ones."""
        if request_id in self.delivery_answered or self.superseded(requested_at):
            return
        try:
            packages = plan_packages(lines, locations) if lines else []
        except DomainError as refusal:
            self._record(ShipmentsUnavailable(order_number=self.id, request_id=request_id,
                                              code=refusal.code, message=refusal.message, requested_at=requested_at))
            return
        if not packages or not methods:
            self._record(ShipmentsUnavailable(order_number=self.id, request_id=request_id, code="no_rates",
                                              message=NO_RATES, requested_at=requested_at))
            return
        fresh = iter(ids)  # for shipments and rates
        ranked = sorted(methods, key=lambda m: (m.cost, m.id))
        keep = next((m.id for m in ranked if m.id in self.selected_method_ids), ranked[0].id)
        shipments = [
            Shipment(id=next(fresh), number=new_shipment_number(), stock_location_id=location.id,
                     stock_location_name=location.name, state="pending", manifest=manifest,
                     rates=[ShippingRate(id=next(fresh), shipping_method_id=m.id, name=m.name, code=m.code,
                                         cost=m.cost, selected=m.id == keep) for m in ranked])
            for location, manifest in packages
        ]
        self._record(ShipmentsBuilt(order_number=self.id, request_id=request_id, shipments=shipments,
                                    country_iso=country_iso, currency=currency, requested_at=requested_at))

    def superseded(self, requested_at: int | None) -> bool:
        latest = self.latest_request_at
        return requested_at is not None and latest is not None and requested_at < latest

    def _answered(self, request_id: str, requested_at: int | None) -> None:
        self.delivery_answered.add(request_id)
        if requested_at is not None and not self.superseded(requested_at):
            self.latest_request_at = requested_at

    def _check_changeable(self) -> None:
        if self.held:
            raise DomainError("shipments_locked", "The order is being completed or has been placed;"
                              " its shipments cannot change.", status=409)

    def select_rate(self, shipment_number: str, rate_id: int) -> None:
        """The checkout's `selected_shipping_rate_id`: one of the shipment's rates."""
        self._check_changeable()
        shipment = self.find(shipment_number)
        rate = next((r for r in shipment.rates if r.id == rate_id), None)
        if rate is None:
            raise DomainError("invalid_rate", "is invalid", field="shipments.selected_shipping_rate_id")
        if not rate.selected:
            self._record(ShippingRateSelected(order_number=self.id, shipment_number=shipment_number,
                                              rate_id=rate.id, cost=rate.cost))

    def select_method(self, shipment_number: str, method: Method, *, new_rate_id: int) -> None:
        """Solidus's select_shipping_method: the shipment is re-rated for `method` alone (an
        estimate for its destination, including methods not offered to customers) and that
        one rate, selected, replaces its rates."""
        self._check_changeable()
        self.find(shipment_number)
        self._record(ShipmentRatesReplaced(
            order_number=self.id, shipment_number=shipment_number,
            rates=[ShippingRate(id=new_rate_id, shipping_method_id=method.id, name=method.name, code=method.code,
                                cost=method.cost, selected=True)]))

    def select_method_among_rates(self, shipment_number: str, method_id: int) -> None:
        """select_method for shipments built before their destination was recorded."""
        rate = next((r for r in self.find(shipment_number).rates if r.shipping_method_id == method_id), None)
        if rate is None:
            raise not_found("shipping method")
        self.select_rate(shipment_number, rate.id)

    def allocation_answered(self, request_id: str) -> bool:
        """Answered already, or compensated before it came (a command replayed late from the DLQ)."""
        return request_id in self.allocations or request_id in self.released

    def allocate(self, request_id: str, lines: list[Line], locations: list[StockLocation]) -> list[AllocatedUnit]:
        """The completion's stock, judged on `locations` as locked by the caller, which
        takes the returned units from stock in the same transaction (see commands).
        Allocated, the shipments and their selected rates are fixed: `ship_total` is their cost."""
        if self.allocation_answered(request_id):
            return []
        try:
            units = take_units(self.shipments, lines, locations)
        except DomainError as refusal:
            self._record(StockAllocationFailed(order_number=self.id, request_id=request_id,
                                               message=refusal.message, code=refusal.code))
            return []
        self._record(StockAllocated(order_number=self.id, request_id=request_id, units=units,
                                    ship_total=sum((s.cost for s in self.shipments), Decimal(0))))
        return units

    def release(self, request_id: str) -> list[AllocatedUnit]:
        """Units to put back, answered once (with none if the request allocated nothing)."""
        if request_id in self.released:
            return []
        units = self.allocations.get(request_id) or []
        self._record(StockReleased(order_number=self.id, request_id=request_id, units=units))
        return units

    def discard(self, request_id: str | None = None) -> None:
        """The checkout restarted: its shipments are gone. With `request_id` (the delivery
        request the restart made stale) only if they were built for it: shipments built since
        for a newer request stay."""
        if self.shipments and (request_id is None or request_id == self.built_for):
            self._record(ShipmentsDiscarded(order_number=self.id))

    def find(self, shipment_number: str) -> Shipment:
        shipment = next((s for s in self.shipments if s.number == shipment_number), None)
        if shipment is None:
            raise not_found("shipment")
        return shipment

    def _on_ShipmentsBuilt(self, e: ShipmentsBuilt) -> None:
        self.shipments = list(e.shipments)
        self.built_for = e.request_id
        self._answered(e.request_id, e.requested_at)
        self.destination = (e.country_iso, e.currency) if e.country_iso and e.currency else None

    def _on_ShipmentsUnavailable(self, e: ShipmentsUnavailable) -> None:
        self.shipments = []
        self.built_for = None
        self._answered(e.request_id, e.requested_at)

    def _on_ShippingRateSelected(self, e: ShippingRateSelected) -> None:
        self.shipments = [
            s.model_copy(update={"rates": [r.model_copy(update={"selected": r.id == e.rate_id}) for r in s.rates]})
            if s.number == e.shipment_number else s for s in self.shipments]
        self.selected_method_ids = {r.shipping_method_id for s in self.shipments for r in s.rates if r.selected}

    def _on_ShipmentRatesReplaced(self, e: ShipmentRatesReplaced) -> None:
        self.shipments = [s.model_copy(update={"rates": list(e.rates)}) if s.number == e.shipment_number else s
                          for s in self.shipments]
        self.selected_method_ids = {r.shipping_method_id for s in self.shipments for r in s.rates if r.selected}

    def _on_ShipmentsDiscarded(self, e: ShipmentsDiscarded) -> None:
        self.shipments = []
        self.built_for = None

    def _on_StockAllocated(self, e: StockAllocated) -> None:
        self.allocations[e.request_id] = list(e.units)
        self.held.add(e.request_id)

    def _on_StockAllocationFailed(self, e: StockAllocationFailed) -> None:
        self.allocations[e.request_id] = []

    def _on_StockReleased(self, e: StockReleased) -> None:
        self.released.add(e.request_id)
        self.held.discard(e.request_id)
