"""Reading a Solidus request: the query string, then a JSON or form body on top, as Rails
merges them; bounded in size (the admission layer), depth and fields."""
from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from services.gateway.scalars import scalar_type
from services.gateway.solidus.errors import bad_request, invalid_resource, missing_param
from shared.validation import MAX_JSON_DEPTH, BadJson, ascii_int, parse_json_object

MAX_FORM_FIELDS = 200


async def params(request: Request) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v[-1] for k, v in parse_qs(request.url.query,
                                                            max_num_fields=MAX_FORM_FIELDS).items()}
    raw = await request.body()
    if raw.strip():
        if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
            merged.update(_nest_form(parse_qs(raw.decode(errors="replace"), max_num_fields=MAX_FORM_FIELDS)))
        else:
            try:
                merged.update(parse_json_object(raw))
            except BadJson as bad:
                raise bad_request(str(bad)) from None
    return merged


def _nest_form(form: dict[str, list[str]]) -> dict[str, Any]:
    """`line_item[variant_id]=1` → {"line_item": {"variant_id": "1"}}. A key that is both a
    value and a nest (`order=x&order[email]=y`) is refused, as Rails refuses it (400)."""
    result: dict[str, Any] = {}
    for key, values in form.items():
        parts = key.replace("]", "").split("[")
        if len(parts) > MAX_JSON_DEPTH:
            raise bad_request(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise bad_request(f"The form field {part!r} is both a value and a nest.")
        if isinstance(target.get(parts[-1]), dict):
            raise bad_request(f"The form field {parts[-1]!r} is both a value and a nest.")
        target[parts[-1]] = values[-1]
    return result


def require(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if not isinstance(value, dict) or not value:
        raise missing_param(name)
    return value


def as_int(value: Any) -> Any:
    """Form and query values arrive as strings; numbers in JSON stay as they are (anything
    else is passed on as it came, for the owner's rule to refuse)."""
    if isinstance(value, str):
        number = ascii_int(value)
        return value if number is None else number
    return value


def collection(value: Any) -> list[dict]:
    """Nested attributes arrive as arrays or as Rails index hashes ({"0": {...}})."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        items = [value[k] for k in sorted(value, key=lambda k: (len(str(k)), str(k)))]
    else:
        return []
    return [item for item in items if isinstance(item, dict)]


# -- the request bodies, bounded: what OpenAPI documents, and what a request may hold --------
# Solidus reads form and JSON bodies alike, so a value may arrive as a string ("2") or a
# number (2): each scalar field takes either, bounded; what the value means (a quantity of
# 1 to 10,000, an amount within numeric(12,2)) is judged by the service that owns it, which
# answers with Solidus's messages.
MAX_ITEMS = 20
# A form or JSON scalar: text of at most `max_length` (255) characters, a number, a boolean.
scalar = scalar_type(too_long="is too long (maximum is {max} characters)")


Text = scalar()
VariantId = scalar(20, "A variant's id")
Quantity = scalar(20, "1 to 10,000 (when updating, 0 or less removes the line)")
Amount = scalar(32, "Within numeric(12,2): at most 9,999,999,999.99")


def nested(model: type[BaseModel]):
    """Rails' nested attributes: an array of at most MAX_ITEMS `model`s, or an index hash
    ({"0": {...}}) read as one."""
    def as_list(value: Any) -> Any:
        return [value[k] for k in sorted(value, key=lambda k: (len(str(k)), str(k)))] if isinstance(value, dict) \
            else value
    return Annotated[Annotated[list[model], Field(max_length=MAX_ITEMS)] | None, BeforeValidator(as_list)]


class Fields(BaseModel):
    model_config = ConfigDict(extra="allow")  # Rails ignores the parameters it does not permit


class LineItemFields(Fields):
    variant_id: VariantId = None
    quantity: Quantity = None


class LineItemRequest(Fields):
    line_item: LineItemFields
    order_token: scalar(64) = None


class AddressFields(Fields):
    name: Text = None
    firstname: Text = None
    lastname: Text = None
    address1: Text = None
    address2: Text = None
    city: Text = None
    zipcode: Text = None
    phone: Text = None
    alternative_phone: Text = None
    company: Text = None
    state_name: Text = None
    state_id: scalar(20) = None
    country_id: scalar(20) = None
    country_iso: scalar(3) = None


class CardFields(Fields):
    number: scalar(32) = None
    month: scalar(4) = None
    year: scalar(4) = None
    verification_value: scalar(8) = None
    name: Text = None
    first_name: Text = None
    last_name: Text = None
    expiry: scalar(16) = None
    payment_token: scalar(64) = None


class PaymentFields(Fields):
    payment_method_id: scalar(20) = None
    amount: Amount = None
    source_attributes: CardFields | None = None
    source: CardFields | None = None


class ShipmentFields(Fields):
    id: scalar(20) = None
    selected_shipping_rate_id: scalar(20) = None


class OrderFields(Fields):
    email: scalar(254) = None
    use_billing: scalar(8) = None
    bill_address_attributes: AddressFields | None = None
    ship_address_attributes: AddressFields | None = None
    bill_address: AddressFields | None = None
    ship_address: AddressFields | None = None
    shipments_attributes: nested(ShipmentFields) = None
    payments_attributes: nested(PaymentFields) = None


class CheckoutRequest(Fields):
    order: OrderFields | None = None
    expected_total: scalar(32) = None
    order_token: scalar(64) = None


class StepRequest(Fields):
    expected_total: scalar(32) = None
    order_token: scalar(64) = None


class PaymentRequest(Fields):
    payment: PaymentFields
    order_token: scalar(64) = None


class CouponRequest(Fields):
    coupon_code: Text = None
    order_token: scalar(64) = None


class ShippingMethodRequest(Fields):
    shipping_method_id: scalar(20) = None
    order_token: scalar(64) = None


def rails_attribute(loc: list[str]) -> str:
    """Where Rails reports an error: relative to the resource (`order[email]` → `email`), a
    nested resource by its name (`bill_address_attributes.name` → `bill_address.name`)."""
    parts = loc[1:] if len(loc) > 1 else loc
    return ".".join(part.removesuffix("_attributes") for part in parts) or "base"


def validated(model: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    """`body` if it fits `model` (returned as it came: what the values mean is judged
    further on); otherwise Solidus's 422 naming each field that does not fit."""
    try:
        model.model_validate(body)
    except ValidationError as invalid:
        errors: dict[str, list[str]] = {}
        for problem in invalid.errors():
            loc = [str(part) for part in problem["loc"] if isinstance(part, str)]
            if problem["type"] == "missing" and len(loc) == 1:
                raise missing_param(loc[0]) from None
            if problem["type"] == "too_long" and "max_length" in problem.get("ctx", {}):
                message = f"is too long (maximum is {problem['ctx']['max_length']} items)"
            else:
                message = problem["msg"] if problem["type"] in ("too_long", "invalid") else "is invalid"
            path = rails_attribute(loc)
            if message not in errors.setdefault(path, []):
                errors[path].append(message)
        raise invalid_resource(errors) from None
    return body
