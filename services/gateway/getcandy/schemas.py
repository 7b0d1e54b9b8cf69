"""GetCandy's requests and answers, for the OpenAPI document (`/openapi.json`) and the
fuzzing's response-schema check. Request bodies are bounded (getcandy-api.md's limits where
it gives them, 255 characters otherwise); what a value means is judged further on, with
GetCandy's messages."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from services.gateway.getcandy.errors import invalid
from services.gateway.scalars import scalar_type

MAX_ITEMS = 100


# A JSON scalar: text of at most `max_length` (255) characters, a number, a boolean.
scalar = scalar_type(too_long="may not be greater than {max} characters")


Text = scalar()
Id = scalar(64, "An id, as GetCandy hands them out")
Quantity = scalar(20, "1 to 10,000")


class Fields(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields GetCandy would ignore


class VariantLine(Fields):
    id: Id = None
    quantity: Quantity = None


class BasketLinesRequest(Fields):
    basket_id: Id = None
    variants: Annotated[list[VariantLine], Field(max_length=MAX_ITEMS)] | Text = None
    currency: scalar(3) = None


class QuantityRequest(Fields):
    quantity: Quantity = None


class BasketCouponRequest(Fields):
    coupon: Text = None


class DiscountRequest(Fields):
    discount_id: Id = None


class OrderRequest(Fields):
    basket_id: Id = None
    include: Text = None


class CandyAddressRequest(Fields):
    firstname: scalar(20) = None
    lastname: scalar(20) = None
    address: scalar(40) = None
    address_two: scalar(40) = None
    address_three: scalar(40) = None
    city: scalar(40) = None
    county: scalar(40) = None
    state: scalar(40) = None
    zip: scalar(8) = None
    country: scalar(60) = None
    phone: scalar(40) = None
    email: scalar(254) = None
    company_name: Text = None


class PriceRequest(Fields):
    price_id: Id = None
    preference: Text = None


class ContactRequest(Fields):
    email: scalar(254) = None
    phone: scalar(40) = None


class ProcessRequest(Fields):
    order_id: Id = None
    payment_token: scalar(64) = None
    payment_type_id: Id = None
    payment_type: Text = None
    notes: scalar(1000) = None
    customer_reference: Text = None


def validated(model: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    """`body` if it fits `model` (returned as it came); otherwise GetCandy's 422 flat map."""
    try:
        model.model_validate(body)
    except ValidationError as problems:
        errors: dict[str, list[str]] = {}
        for problem in problems.errors():
            field = ".".join(str(part) for part in problem["loc"])
            if problem["type"] == "too_long" and "max_length" in problem.get("ctx", {}):
                message = f"The {field} may not have more than {problem['ctx']['max_length']} items."
            elif problem["type"] == "too_long":
                message = f"The {field} {problem['msg']}."
            else:
                message = f"The {field} is invalid."
            errors.setdefault(field, []).append(message)
        raise invalid(errors) from None
    return body


# -- answers ------------------------------------------------------------------------------
class Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class CandyError(Shape):
    """`{"error":{"http_code","message"}}`: the controllers' errors."""
    error: dict[str, Any]


class CandyFieldErrors(RootModel[dict[str, Any]]):
    """422: Laravel's flat field map (`{"field":["message"]}`), or a controller's error."""


class CandyBasket(Shape):
    id: str
    currency: str
    sub_total: float
    discount_total: float
    tax_total: float
    total: float
    lines: dict[str, list[dict[str, Any]]]


class CandyBasketEnvelope(Shape):
    data: CandyBasket


class CandyOrder(Shape):
    id: str
    status: str
    sub_total: int
    delivery_total: int
    discount_total: int
    tax_total: int
    order_total: int
    currency: str
    reference: str | None
    placed_at: str | None


class CandyOrderEnvelope(Shape):
    data: CandyOrder


class CandyList(Shape):
    data: list[dict[str, Any]]


class CandyObject(Shape):
    data: dict[str, Any]


def responses(ok: int | None = None, model: type[BaseModel] | None = None) -> dict[int | str, dict]:
    documented: dict[int | str, dict] = {400: {"model": CandyError}, 403: {"model": CandyError},
                                         404: {"model": CandyError}, 408: {"model": CandyError},
                                         409: {"model": CandyError}, 413: {"model": CandyError},
                                         422: {"model": CandyFieldErrors}, 503: {"model": CandyError}}
    if ok is not None:
        documented[ok] = {"model": model} if model else {"description": "No content"}
    return documented
