"""What Solidus's answers look like, for the OpenAPI document (`/openapi.json`) and the
response-schema check of the fuzzing (tests/test_fuzzing.py). Each model names the fields
a storefront relies on; the rest of Solidus's JSON is allowed alongside."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- errors (research §3) -----------------------------------------------------------------
class ErrorBody(Shape):
    """401, 404, 408, 413, 503, and 400 for an unreadable body: `{"error": "..."}`."""
    error: str


class BadRequest(Shape):
    """400: an unreadable body (`error`), or `expected_total` mismatched (`errors`)."""
    error: str | None = None
    errors: dict[str, list[str]] | None = None


class Unprocessable(Shape):
    """422: invalid_resource and could_not_transition (`error`, `errors` by field), the
    insufficient-stock form (`errors` a list, `type`), a missing parameter
    (`missing_param`), or a coupon's outcome (`status_code`)."""
    error: str | None = None
    errors: dict[str, list[str]] | list[str] | None = None
    type: str | None = None
    missing_param: str | None = None
    status_code: str | None = None


# -- resources (research §4) ----------------------------------------------------------------
class Variant(Shape):
    id: int
    name: str
    sku: str
    price: str
    display_price: str
    options_text: str
    track_inventory: bool
    product_id: int
    is_master: bool
    total_on_hand: int | None  # null: not tracked, unlimited
    in_stock: bool
    is_backorderable: bool
    is_destroyed: bool


class LineItem(Shape):
    id: int
    quantity: int
    price: str
    total: str
    variant_id: int
    variant: Variant


class Rate(Shape):
    id: int
    name: str
    cost: str
    selected: bool
    shipping_method_id: int
    shipping_method_code: str


class Shipment(Shape):
    id: int
    number: str
    state: str
    cost: str
    shipping_rates: list[Rate]
    selected_shipping_rate: Rate | None
    manifest: list[dict[str, Any]]


class Payment(Shape):
    id: int
    amount: str
    state: str
    payment_method_id: int
    source_type: str | None


class Address(Shape):
    id: int
    name: str | None
    address1: str | None
    city: str | None
    zipcode: str | None
    country_iso: str


class Order(Shape):
    id: str
    number: str
    state: str
    email: str | None
    currency: str
    token: str | None  # the guest's own (an admin without it sees none)
    total: str
    item_total: str
    ship_total: str
    adjustment_total: str
    payment_total: str
    checkout_steps: list[str]
    completed_at: str | None
    payment_state: str | None
    shipment_state: str | None
    line_items: list[LineItem]
    shipments: list[Shipment]
    payments: list[Payment]
    adjustments: list[dict[str, Any]]
    bill_address: Address | None
    ship_address: Address | None


class CouponResult(Shape):
    success: str | None
    error: str | None
    successful: bool
    status_code: str | None


class NewPayment(Shape):
    attributes: list[str]
    payment_methods: list[dict[str, Any]]


class EstimatedRate(Shape):
    name: str
    cost: str
    shipping_method_id: int
    shipping_method_code: str


class EstimatedRates(Shape):
    shipping_rates: list[EstimatedRate]


class VariantsPage(Shape):
    variants: list[Variant]
    count: int


class Product(Shape):
    id: int
    name: str
    slug: str
    master: Variant
    variants: list[Variant]


class ProductsPage(Shape):
    products: list[Product]
    count: int


class Country(Shape):
    id: int
    iso: str
    name: str
    states_required: bool
    states: list[dict[str, Any]]


class CountriesPage(Shape):
    countries: list[Country]
    count: int


LOCKED = {"description": "The order is being completed (Solidus's OrderMutex)",
          "content": {"text/plain": {"schema": {"type": "string"}}}}


def responses(ok: int | None = None, model: type[BaseModel] | None = None, *, locked: bool = False,
              auth: bool = True) -> dict[int | str, dict]:
    """A route's documented answers: its success, and Solidus's error bodies."""
    documented: dict[int | str, dict] = {400: {"model": BadRequest}, 404: {"model": ErrorBody},
                                         408: {"model": ErrorBody},
                                         413: {"model": ErrorBody}, 422: {"model": Unprocessable},
                                         503: {"model": ErrorBody}}
    if auth:
        documented[401] = {"model": ErrorBody}
    if locked:
        documented[409] = LOCKED
    if ok is not None:
        documented[ok] = {"model": model} if model else {"description": "No content"}
    return documented
