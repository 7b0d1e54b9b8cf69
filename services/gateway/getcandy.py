"""The GetCandy-style order lifecycle API (`/api/v1/...`), a second face on the same domain.

Baskets are the same carts and orders as the Solidus dialect's (a GetCandy basket and its
order are one Tillstream order, under two hashids); `process` runs the same completion
saga as Solidus's `complete`. Shapes, statuses and errors follow
../shared/research/getcandy-api.md, with its recommendations where the original crashed:
404 for unknown ids, billing details required before processing, coupons kept when lines
change.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request

from services.gateway.paths import Code, Hash, Id, OrderNumber  # noqa: F401
from fastapi.responses import Response
from hashids import Hashids

from services.gateway.getcandy_ids import ALPHABET, KeyedIds

from shared.jsonutil import dumps_with_numbers
from shared.validation import BadJson, ascii_int, parse_json_object, valid_email
from services.gateway.clients import ServiceResponse
from services.gateway.solidus import COMPLETE_WAIT_MS, await_view, fetch_order, payment_methods, with_view

router = APIRouter(prefix="/api/v1")

BASKETS = KeyedIds("basket")  # baskets and basket lines: unguessable (getcandy_ids.py)
ORDERS = KeyedIds("order")    # orders and their lines
MAIN = Hashids(salt="main", min_length=8, alphabet=ALPHABET)  # catalog: variants, shipping prices, payment types
DEFAULT_CURRENCY = "GBP"


class GetCandyError(Exception):
    def __init__(self, status: int, body: dict) -> None:
        self.status = status
        self.body = body


def error(status: int, message: str) -> GetCandyError:
    return GetCandyError(status, {"error": {"http_code": status, "message": message}})


def invalid(errors: dict[str, list[str]]) -> GetCandyError:
    return GetCandyError(422, errors)  # Laravel's FormRequest: a flat field map


def not_found() -> GetCandyError:
    return error(404, "Resource not found")


BASKET_PLACED = "This basket already has an order that has been placed"
ALREADY_PROCESSED = "This order has already been processed"
ORDER_PLACED = "This order has already been placed"
BEING_PROCESSED = "The order is being processed; please try again shortly."
# The refusals of an order that is completing or placed, whichever service owns the change.
LOCKED_CODES = ("order_locked", "order_placed", "cart_locked", "shipments_locked")


def refuse_if_locked(response: ServiceResponse, order: dict | None, *, placed_message: str = ORDER_PLACED) -> None:
    """A change refused because the order is placed (403) or being processed (409)."""
    if response.status_code < 300:
        return
    code = response.json().get("code")
    if code not in LOCKED_CODES:
        return
    if code == "order_placed" or (order and order.get("completed_at")):
        raise error(403, placed_message)
    raise error(409, BEING_PROCESSED)


# -- ids --------------------------------------------------------------------------
def decode(hashids: Hashids | KeyedIds, value: Any) -> int | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    decoded = hashids.decode(value)
    return decoded[0] if len(decoded) == 1 else None


def order_number(hashids: KeyedIds, value: Any) -> str | None:
    number = decode(hashids, value)
    return None if number is None else f"R{number:09d}"


def number_id(hashids: KeyedIds, number: str) -> str:
    return hashids.encode(int(number[1:]))


# -- JSON with exact decimal numbers ----------------------------------------------
def respond(body: Any, status: int = 200) -> Response:
    """GetCandy sends money as JSON numbers; they are written from Decimal, digit for digit."""
    return Response(dumps_with_numbers(_cents(body)), status_code=status, media_type="application/json")


def _cents(value: Any) -> Any:
    if isinstance(value, Decimal):
        return value.quantize(Decimal("0.01"))
    if isinstance(value, dict):
        return {k: _cents(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cents(v) for v in value]
    return value


def minor(amount: Any) -> int:
    return int((Decimal(str(amount)) * 100).to_integral_value())


async def body_of(request: Request) -> dict:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return parse_json_object(raw)
    except BadJson as bad:
        raise error(400, str(bad)) from None


# -- service calls ------------------------------------------------------------------
async def call(request: Request, service: str, method: str, path: str, **kwargs):
    return await request.app.state.services.call(service, method, path, **kwargs)


async def order_view(request: Request, number: str, after: list[str] | None = None) -> dict:
    order = await fetch_order(request, number, after)
    if order is None:
        raise not_found()
    return order


async def advance(request: Request, number: str) -> dict:
    """One checkout step (GetCandy asks for an email only through `contact`, so none is required)."""
    response = await call(request, "order", "PUT", f"/orders/{number}/next",
                          params={"require_email": "false", **with_view()})
    refuse_if_locked(response, None)
    result = response.json()
    if "events" not in result:
        raise invalid({"order": [result.get("message", "The order could not be transitioned.")]})
    order = result["order"]
    refusal = order.get("refusal") or {}
    if result.get("awaiting") and refusal.get("request_id") == result["awaiting"]:
        raise invalid({"price_id": [refusal["message"]]})
    return order


async def variants(request: Request, currency: str) -> dict[int, dict]:
    rows = (await call(request, "cart", "GET", "/variants", params={"currency": currency})).json()
    return {v["id"]: v for v in rows if v["price"] is not None}


def currency_of(request: Request, body: dict | None = None) -> str:
    return (request.headers.get("x-candy-currency") or request.query_params.get("currency")
            or (body or {}).get("currency") or DEFAULT_CURRENCY).upper()


# -- rendering ------------------------------------------------------------------------
def render_variant(variant: dict, on_hand: int | None = None) -> dict:
    price = Decimal(variant["price"])
    return {"id": MAIN.encode(variant["id"]), "sku": variant["sku"], "price": price, "unit_price": price,
            "inventory": on_hand, "min_qty": 1, "min_batch": 1, "name": variant["name"],
            "options": variant.get("options_text", "")}


def render_basket(order: dict) -> dict:
    lines = []
    rate = Decimal(order["tax_rate"])
    for line in order["line_items"]:
        unit = Decimal(line["price"])
        total = unit * line["quantity"]
        lines.append({
            "id": BASKETS.encode(line["id"]), "quantity": line["quantity"], "line_total": total,
            "unit_price": unit, "unit_tax": _truncate(unit * rate), "line_discount": Decimal(0),
            "tax": _truncate(total * rate), "meta": [],
            "variant": {"data": render_variant({**line["variant"], "price": line["price"]})},
        })
    discount = -Decimal(order["adjustment_total"])
    return {
        "id": number_id(BASKETS, order["number"]), "currency": order["currency"],
        "sub_total": Decimal(order["item_total"]), "discount_total": discount,
        "tax_total": Decimal(order["items_tax"]),
        "total": Decimal(order["item_total"]) - discount + Decimal(order["items_tax"]),
        "changed": False, "has_exclusions": False, "meta": [],
        "lines": {"data": lines},
        "discounts": {"data": [render_discount(a) for a in order["adjustments"]]},
    }


def render_discount(adjustment: dict) -> dict:
    return {"id": MAIN.encode(adjustment["promotion_id"]), "name": adjustment["label"], "type": "coupon",
            "coupon": adjustment["code"], "amount": minor(-Decimal(adjustment["amount"])), "start_at": None,
            "end_at": None, "priority": 1, "status": True, "stop_rules": False, "uses": None}


def _truncate(amount: Decimal) -> Decimal:
    from decimal import ROUND_DOWN

    return amount.quantize(Decimal("0.01"), rounding=ROUND_DOWN)


def status_of(order: dict) -> str:
    refusal = order.get("refusal") or {}
    if order["state"] == "complete":
        card = any(p["method_type"] == "gateway" and p["state"] in ("pending", "completed")
                   for p in order["payments"])
        return "payment-received" if card else "payment-processing"
    if order["state"] == "canceled":
        return "expired"
    if order["state"] == "payment" and refusal.get("code") == "payment_failed":
        return "failed"
    return "awaiting-payment"


def details(address: dict | None, phone: str | None = None, email: str | None = None) -> dict:
    if not address:
        return {k: None for k in ("phone", "email", "company_name", "firstname", "lastname", "address",
                                  "address_two", "address_three", "city", "county", "state", "country", "zip")}
    return {"phone": address.get("phone") or phone, "email": address.get("email") or email,
            "company_name": address.get("company"), "firstname": address.get("firstname"),
            "lastname": address.get("lastname"), "address": address.get("address1"),
            "address_two": address.get("address2"), "address_three": None, "city": address.get("city"),
            "county": address.get("state_name"), "state": address.get("state_name"),
            "country": COUNTRY_NAMES.get(address.get("country_iso"), address.get("country_iso")),
            "zip": address.get("zipcode")}


COUNTRY_NAMES = {"GB": "United Kingdom", "US": "United States"}


def render_order(order: dict, includes: set[str]) -> dict:
    rate = Decimal(order["tax_rate"])
    items = Decimal(order["item_total"])
    discount = -Decimal(order["adjustment_total"])
    shipment = next(iter(order["shipments"]), None)
    selected = next((r for r in shipment["rates"] if r["selected"]), None) if shipment else None
    payment = next((p for p in reversed(order["payments"]) if p["state"] != "invalid"), None)
    reference = order.get("reference")
    body = {
        "id": number_id(ORDERS, order["number"]), "display_id": f"#ORD-{order['number'][1:]}",
        "sub_total": minor(items - discount), "delivery_total": minor(order["ship_total"]),
        "discount_total": minor(discount), "tax_total": minor(order["additional_tax_total"]),
        "order_total": minor(order["total"]), "currency": order["currency"], "status": status_of(order),
        "order_status": None, "type": (payment["payment_method_name"] if payment and payment["method_type"] ==
                                       "gateway" else "Offline") if order.get("completed_at") else None,
        "reference": reference, "customer_reference": None,
        "invoice_reference": f"#INV-{reference}" if reference else None, "vat_no": None, "tracking_no": None,
        "dispatched_at": None, "placed_at": order.get("completed_at"),
        "shipping_preference": None, "shipping_method": selected["name"] if selected else None,
        "customer_name": " ".join(filter(None, [(order.get("bill_address") or {}).get("firstname"),
                                                (order.get("bill_address") or {}).get("lastname")])) or None,
        "contact_details": {"phone": order.get("contact_phone"), "email": order.get("email")},
        "billing_details": details(order.get("bill_address")),
        "shipping_details": {**details(order.get("ship_address")), "preference": None},
        "created_at": order["created_at"], "updated_at": order["updated_at"], "notes": None, "meta": [],
    }
    product_lines = [{
        "id": ORDERS.encode(line["id"]), "quantity": line["quantity"],
        "line_total": minor(Decimal(line["price"]) * line["quantity"]), "discount_total": 0, "delivery_total": 0,
        "unit_price": minor(line["price"]), "unit_qty": 1,
        "tax_total": minor(_truncate(Decimal(line["price"]) * line["quantity"] * rate)),
        "tax_rate": int(rate * 100), "description": line["variant"]["name"],
        "option": line["variant"].get("options_text", ""), "sku": line["variant"]["sku"], "is_shipping": False,
        "is_manual": False, "meta": []} for line in order["line_items"]]
    shipping_line = None if selected is None else {
        "id": ORDERS.encode(selected["id"]), "quantity": 1, "line_total": minor(selected["cost"]),
        "discount_total": 0, "delivery_total": minor(selected["cost"]), "unit_price": minor(selected["cost"]),
        "unit_qty": 1, "tax_total": minor(order["shipping_tax"]), "tax_rate": int(rate * 100),
        "description": selected["name"], "option": shipment["stock_location_name"], "sku": selected["code"],
        "is_shipping": True, "is_manual": False, "meta": []}
    if "lines" in includes:
        body["lines"] = {"data": product_lines + ([shipping_line] if shipping_line else [])}
    if "shipping" in includes:
        body["shipping"] = {"data": shipping_line}
    if "discounts" in includes:
        body["discounts"] = {"data": [render_discount(a) for a in order["adjustments"]]}
    if "transactions" in includes:
        body["transactions"] = {"data": []}
    return body


def includes_of(request: Request, body: dict | None = None) -> set[str]:
    raw = request.query_params.get("include") or request.query_params.get("includes") or (body or {}).get(
        "include") or ""
    return {part.strip() for part in str(raw).split(",") if part.strip()}


# -- baskets ------------------------------------------------------------------------
async def validate_lines(request: Request, body: dict, currency: str, *, existing: dict[int, int]) -> list[tuple]:
    errors: dict[str, list[str]] = {}
    if "basket_id" in body and order_number(BASKETS, body["basket_id"]) is None:
        errors["basket_id"] = ["The selected basket id is invalid."]
    wanted = body.get("variants")
    if not isinstance(wanted, list) or not wanted:
        errors["variants"] = ["The variants field is required."]
        raise invalid(errors)
    catalog = await variants(request, currency)
    ids = [decode(MAIN, v.get("id")) if isinstance(v, dict) else None for v in wanted]
    stock = (await call(request, "shipping", "GET", "/stock",
                        params={"variant_id": [i for i in ids if i is not None]})).json()
    if len({i for i in ids if i is not None}) < len([i for i in ids if i is not None]):
        errors["variants"] = ["The variants field has a duplicate value."]
    lines = []
    for n, (item, variant_id) in enumerate(zip(wanted, ids)):
        if variant_id is None or variant_id not in catalog:
            errors[f"variants.{n}.id"] = ["The variant ID is incorrect"]
            continue
        quantity = item.get("quantity")
        if isinstance(quantity, str) and ascii_int(quantity) is not None:
            quantity = ascii_int(quantity)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            errors[f"variants.{n}.quantity"] = [f"The variants.{n}.quantity must be a number."]
            continue
        if quantity < 1:
            errors[f"variants.{n}.quantity"] = ["You must add at least 1 items."]
            continue
        level = stock.get(str(variant_id))
        tracked = catalog[variant_id]["track_inventory"]
        if tracked and not (level and level["backorderable"]) and \
                quantity + existing.get(variant_id, 0) > (level["on_hand"] if level else 0):
            errors[f"variants.{n}.quantity"] = ["Insufficient stock levels"]
            continue
        lines.append((variant_id, quantity))
    if errors:
        raise invalid(errors)
    return lines


async def add_lines(request: Request, order: dict, lines: list[tuple]) -> list[str]:
    events: list[str] = []
    for variant_id, quantity in lines:
        response = await call(request, "cart", "POST", f"/orders/{order['number']}/line_items",
                              json={"variant_id": variant_id, "quantity": quantity, "currency": order["currency"]})
        refuse_if_locked(response, order, placed_message=BASKET_PLACED)
        if response.status_code >= 300:
            raise error(422, "Unable to add product at this quantity")
        events += response.json()["events"]
    return events


async def _basket_lines(request: Request, *, replace: bool) -> Response:
    body = await body_of(request)
    currency = currency_of(request, body)
    number = order_number(BASKETS, body["basket_id"]) if "basket_id" in body else None
    order = await fetch_order(request, number) if number else None
    if number and order is None:
        raise invalid({"basket_id": ["The selected basket id is invalid."]})
    existing = {} if replace or order is None else {l["variant_id"]: l["quantity"] for l in order["line_items"]}
    lines = await validate_lines(request, body, order["currency"] if order else currency, existing=existing)
    if order is None:
        created = (await call(request, "order", "POST", "/orders", json={"currency": currency},
                              params=with_view())).json()
        number, order = created["number"], created["order"]
    events: list[str] = []
    if replace:
        for line in order["line_items"]:  # lines are replaced; coupons stay
            response = await call(request, "cart", "DELETE", f"/orders/{number}/line_items/{line['id']}")
            refuse_if_locked(response, order, placed_message=BASKET_PLACED)
            events += response.json()["events"]
    events += await add_lines(request, order, lines)
    return respond({"data": render_basket(await order_view(request, number, events))})


@router.post("/basket-lines")
async def post_basket_lines(request: Request):
    return await _basket_lines(request, replace=False)


@router.post("/baskets")
async def post_baskets(request: Request):
    return await _basket_lines(request, replace=True)


@router.get("/baskets/{basket_id}")
async def get_basket(basket_id: Hash, request: Request):
    number = order_number(BASKETS, basket_id)
    if number is None:
        raise not_found()
    return respond({"data": render_basket(await order_view(request, number))})


async def line_and_basket(request: Request, line_hash: str) -> tuple[int, dict]:
    line_id = decode(BASKETS, line_hash)
    if line_id is None:
        raise not_found()
    found = await call(request, "cart", "GET", f"/line_items/{line_id}")
    if found.status_code != 200:
        raise not_found()
    order = await order_view(request, found.json()["order_number"])
    if not any(l["id"] == line_id for l in order["line_items"]):
        raise not_found()
    return line_id, order


def quantity_of(body: dict, *, default: int | None) -> int:
    quantity = body.get("quantity", default)
    if isinstance(quantity, str) and ascii_int(quantity) is not None:
        quantity = ascii_int(quantity)
    if quantity is None:
        raise invalid({"quantity": ["The quantity field is required."]})
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise invalid({"quantity": ["The quantity must be a number."]})
    return quantity


async def _set_line(request: Request, order: dict, line_id: int, quantity: int) -> Response:
    number = order["number"]
    if quantity <= 0:
        response = await call(request, "cart", "DELETE", f"/orders/{number}/line_items/{line_id}")
    else:
        response = await call(request, "cart", "PATCH", f"/orders/{number}/line_items/{line_id}",
                              json={"quantity": quantity})
    refuse_if_locked(response, order, placed_message=BASKET_PLACED)
    if response.status_code >= 300:
        raise invalid({"quantity": [response.json().get("message", "is invalid")]})
    return respond({"data": render_basket(await order_view(request, number, response.json()["events"]))})


def current_quantity(order: dict, line_id: int) -> int:
    return next(l["quantity"] for l in order["line_items"] if l["id"] == line_id)


@router.put("/basket-lines/{line_hash}")
async def put_basket_line(line_hash: Hash, request: Request):
    body = await body_of(request)
    quantity = quantity_of(body, default=None)
    if quantity < 1:
        raise invalid({"quantity": ["The quantity must be at least 1."]})
    line_id, order = await line_and_basket(request, line_hash)
    return await _set_line(request, order, line_id, quantity)


@router.post("/basket-lines/{line_hash}/add")
async def add_to_basket_line(line_hash: Hash, request: Request):
    quantity = quantity_of(await body_of(request), default=1)
    line_id, order = await line_and_basket(request, line_hash)
    return await _set_line(request, order, line_id, current_quantity(order, line_id) + quantity)


@router.put("/basket-lines/{line_hash}/remove")
async def remove_from_basket_line(line_hash: Hash, request: Request):
    quantity = quantity_of(await body_of(request), default=1)
    line_id, order = await line_and_basket(request, line_hash)
    return await _set_line(request, order, line_id, current_quantity(order, line_id) - quantity)


@router.delete("/basket-lines/{line_hash}")
async def delete_basket_line(line_hash: Hash, request: Request):
    line_id, order = await line_and_basket(request, line_hash)
    response = await call(request, "cart", "DELETE", f"/orders/{order['number']}/line_items/{line_id}")
    refuse_if_locked(response, order, placed_message=BASKET_PLACED)
    await await_view(request, order["number"], response.json()["events"])
    return Response(status_code=204)


COUPON_INVALID = {"coupon": ["The coupon is either invalid, expired or cannot be used"]}


@router.put("/baskets/{basket_id}/discounts")
async def add_discount(basket_id: Hash, request: Request):
    body = await body_of(request)
    number = order_number(BASKETS, basket_id)
    order = await fetch_order(request, number) if number else None
    if order is None:
        raise not_found()
    code = str(body.get("coupon") or "").strip().lower()
    if not code:
        raise invalid({"coupon": ["The coupon field is required."]})
    response = await call(request, "cart", "POST", f"/orders/{number}/coupon_codes", json={"code": code})
    refuse_if_locked(response, order, placed_message=BASKET_PLACED)
    if response.status_code >= 300:
        raise invalid(COUPON_INVALID)
    return respond({"data": render_basket(await order_view(request, number, response.json()["events"]))})


@router.delete("/baskets/{basket_id}/discounts")
async def remove_discount(basket_id: Hash, request: Request):
    body = await body_of(request)
    number = order_number(BASKETS, basket_id)
    order = await fetch_order(request, number) if number else None
    if order is None:
        raise not_found()
    promotion_id = decode(MAIN, body.get("discount_id"))
    adjustment = next((a for a in order["adjustments"] if a["promotion_id"] == promotion_id), None)
    if adjustment is None:
        raise invalid({"discount_id": ["The selected discount id is invalid."]})
    response = await call(request, "cart", "DELETE", f"/orders/{number}/coupon_codes/{adjustment['code']}")
    refuse_if_locked(response, order, placed_message=BASKET_PLACED)
    return respond({"data": render_basket(await order_view(request, number, response.json()["events"]))})


# -- orders -------------------------------------------------------------------------
def number_of(order_hash: Any) -> str:
    number = order_number(ORDERS, order_hash)
    if number is None:
        raise not_found()
    return number


async def find_order(request: Request, order_hash: Any) -> dict:
    return await order_view(request, number_of(order_hash))


async def change_order(request: Request, order_hash: Any, path: str, change: dict) -> ServiceResponse:
    """An order-service command that needs nothing from the order first: an unknown order
    is the command's own 404, so no read precedes it."""
    response = await call(request, "order", "PATCH", f"/orders/{number_of(order_hash)}/{path}", json=change,
                          params=with_view())
    if response.status_code == 404:
        raise not_found()
    refuse_if_locked(response, None)
    return response


@router.post("/orders")
async def create_order(request: Request):
    body = await body_of(request)
    if not body.get("basket_id"):
        raise invalid({"basket_id": ["The basket id field is required."]})
    number = order_number(BASKETS, body["basket_id"])
    order = await fetch_order(request, number) if number else None
    if order is None:
        raise invalid({"basket_id": ["The selected basket id is invalid."]})
    if order.get("completed_at"):
        raise error(403, BASKET_PLACED)
    if order["state"] == "cart" and order["line_items"]:
        order = await advance(request, number)  # the basket becomes an order awaiting its details
    return respond({"data": render_order(order, includes_of(request, body))})


@router.get("/orders/{order_hash}")
async def show_order(order_hash: Hash, request: Request):
    return respond({"data": render_order(await find_order(request, order_hash), includes_of(request))})


ADDRESS_RULES = (("firstname", 20, True), ("lastname", 20, True), ("address", 40, True), ("city", 40, True),
                 ("address_two", 40, False), ("address_three", 40, False), ("zip", 8, False), ("phone", 40, False))


def validate_address(body: dict) -> dict:
    errors: dict[str, list[str]] = {}
    for name, limit, required in ADDRESS_RULES:
        value = body.get(name)
        if value in (None, ""):
            if required:
                errors[name] = [f"The {name} field is required."]
        elif not isinstance(value, (str, int)) or len(str(value)) > limit:
            errors[name] = [f"The {name} may not be greater than {limit} characters."]
    if not body.get("county") and not body.get("state"):
        errors["county"] = ["The county field is required when state is not present."]
    if not body.get("country"):
        errors["country"] = ["The country field is required."]
    if body.get("email") and not valid_email(body["email"]):
        errors["email"] = ["The email must be a valid email address."]
    if errors:
        raise invalid(errors)
    return {"name": f"{body['firstname']} {body['lastname']}", "firstname": str(body["firstname"]),
            "lastname": str(body["lastname"]), "address1": str(body["address"]),
            "address2": body.get("address_two"), "city": str(body["city"]), "zipcode": str(body.get("zip") or ""),
            "phone": body.get("phone"), "country_name": str(body["country"]),
            "state_name": body.get("county") or body.get("state"), "email": body.get("email"),
            "company": body.get("company_name")}


async def _set_address(request: Request, order_hash: str, kind: str) -> Response:
    body = await body_of(request)
    address = validate_address(body)  # validation comes before the lookup, as in the original
    response = await change_order(request, order_hash, "details", {f"{kind}_address": address, "require_phone": False})
    if response.status_code >= 300:
        problem = response.json().get("details", {}).get("errors", {})
        raise invalid({key.split(".", 1)[-1].replace("zipcode", "zip"): messages
                       for key, messages in problem.items()} or {"country": ["The selected country is invalid."]})
    return respond({"data": render_order(response.json()["order"], includes_of(request, body))})


@router.put("/orders/{order_hash}/shipping/address")
async def shipping_address(order_hash: Hash, request: Request):
    return await _set_address(request, order_hash, "ship")


@router.put("/orders/{order_hash}/billing/address")
async def billing_address(order_hash: Hash, request: Request):
    return await _set_address(request, order_hash, "bill")


async def shipping_options(request: Request, order: dict) -> list[dict]:
    ship = order.get("ship_address")
    if not ship:
        return []
    return (await call(request, "shipping", "GET", "/rates",
                       params={"country_iso": ship["country_iso"], "currency": order["currency"]})).json()


@router.get("/orders/{order_hash}/shipping/methods")
async def shipping_methods(order_hash: Hash, request: Request):
    order = await find_order(request, order_hash)
    rate = Decimal(order["tax_rate"])
    return respond({"data": [{
        "id": MAIN.encode(m["shipping_method_id"]), "rate": minor(m["cost"]),
        "tax": minor(_truncate(Decimal(m["cost"]) * rate)), "fixed": True, "min_basket": 0, "min_basket_tax": 0,
        "min_weight": 0, "weight_unit": "kg", "max_weight": 0, "max_height": 0, "max_width": 0, "max_depth": 0,
        "method": {"data": {"id": MAIN.encode(m["shipping_method_id"]), "type": "standard", "name": m["name"],
                            "description": "", "code": m["code"]}},
        "zone": {"data": {"id": MAIN.encode(m["shipping_method_id"]), "name": m["zone"]}},
    } for m in await shipping_options(request, order)]})


@router.put("/orders/{order_hash}/shipping/cost")
async def shipping_cost(order_hash: Hash, request: Request):
    body = await body_of(request)
    if not body.get("price_id"):
        raise invalid({"price_id": ["Please choose a shipping option"]})
    method_id = decode(MAIN, body["price_id"])
    if method_id is None:
        raise invalid({"price_id": ["The selected price id is invalid."]})
    order = await find_order(request, order_hash)
    number = order["number"]
    if order.get("completed_at"):
        raise error(403, ORDER_PLACED)
    if order["state"] == "address":
        order = await advance(request, number)  # shipments and their rates are built
    if order["state"] not in ("delivery", "payment", "confirm") or not order["shipments"]:
        raise invalid({"price_id": ["The shipping address is required first."]})
    events: list[str] = []
    for shipment in order["shipments"]:
        response = await call(request, "shipping", "PUT", f"/orders/{number}/shipments/{shipment['number']}/method",
                              json={"shipping_method_id": method_id})
        refuse_if_locked(response, order)
        if response.status_code >= 300:
            raise invalid({"price_id": ["The selected price id is invalid."]})
        events += response.json()["events"]
    order = await order_view(request, number, events)
    return respond({"data": render_order(order, includes_of(request, body))})


@router.put("/orders/{order_hash}/contact")
async def contact(order_hash: Hash, request: Request):
    body = await body_of(request)
    email = body.get("email") or None
    response = await change_order(request, order_hash, "contact", {"email": email, "phone": body.get("phone") or None})
    if response.status_code >= 300:
        raise invalid({"email": ["The email must be a valid email address."]})
    order = response.json()["order"]
    return respond({"data": render_order(order, includes_of(request, body))})


# -- payments -----------------------------------------------------------------------
async def payment_types(request: Request) -> list[dict]:
    methods = await payment_methods(request)  # reference data, cached briefly
    return [m for m in methods if m["method_type"] == "gateway" and m.get("handle")]


@router.get("/payments/provider")
async def provider(request: Request):
    return respond({"data": {"name": "Offline", "client_token": "OFFLINE"}})


@router.get("/payments/types")
async def types(request: Request):
    return respond({"data": [{"id": MAIN.encode(m["id"]), "name": m["name"], "handle": m["handle"],
                              "driver": "bogus", "success_status": "payment-received"}
                             for m in await payment_types(request)]})


@router.post("/orders/process")
async def process(request: Request):
    body = await body_of(request)
    errors: dict[str, list[str]] = {}
    if not body.get("order_id"):
        errors["order_id"] = ["The order id field is required."]
    if not body.get("payment_token") and not body.get("payment_type_id"):
        errors["payment_token"] = ["The payment token field is required when payment type id is not present."]
        errors["payment_type_id"] = ["The payment type id field is required when payment token is not present."]
    if errors:
        raise invalid(errors)
    order = await find_order(request, body["order_id"])
    number = order["number"]
    method = None
    if body.get("payment_type_id"):
        method_id = decode(MAIN, body["payment_type_id"])
        method = next((m for m in await payment_types(request) if m["id"] == method_id), None)
        if method is None:
            raise not_found()
    elif body.get("payment_type"):
        method = next((m for m in await payment_types(request) if m["handle"] == body["payment_type"]), None)
    if order.get("completed_at"):
        raise error(422, ALREADY_PROCESSED)
    billing = order.get("bill_address") or {}
    if not all(billing.get(k) for k in ("firstname", "lastname", "address1", "city", "zipcode", "country_iso")):
        raise error(403, "The order is missing billing information")
    while order["state"] in ("cart", "address", "delivery"):
        order = await advance(request, number)
    if order["state"] == "payment":
        if method is None:  # the Offline driver: always valid, nothing to charge now
            offline = next(m for m in await payment_methods(request)
                           if m["method_type"] == "check")
            payment = {"payment_method_id": offline["id"], "amount": str(order["total"])}
        else:
            payment = {"payment_method_id": method["id"], "amount": str(order["total"]),
                       "source": {"payment_token": body.get("payment_token")}}
        response = await call(request, "payment", "POST", f"/orders/{number}/payments", json=payment)
        if response.status_code >= 300 and response.json().get("code") == "order_placed":
            raise error(422, ALREADY_PROCESSED)
        if response.status_code >= 300:
            raise error(422, response.json().get("message", "The payment token is invalid"))
        await await_view(request, number, response.json()["events"])
        order = await advance(request, number)
    response = await call(request, "order", "PUT", f"/orders/{number}/complete", params=with_view(COMPLETE_WAIT_MS))
    if response.status_code >= 300 and response.json().get("code") == "order_placed":
        raise error(422, ALREADY_PROCESSED)
    refuse_if_locked(response, order)
    result = response.json()
    if "events" not in result:
        raise error(422, result.get("message", "The order could not be processed"))
    awaiting, order = result["awaiting"], result["order"]
    if order.get("pending_request") == awaiting:
        return respond({"data": render_order(order, {"lines", "shipping", "discounts"})}, 202)
    refusal = order.get("refusal") or {}
    if refusal.get("request_id") == awaiting:
        raise completion_refused(refusal)
    return respond({"data": render_order(order, {"lines", "shipping", "discounts"})})


def completion_refused(refusal: dict) -> GetCandyError:
    """The completion saga's failure (services/order/saga.py) as GetCandy answers it."""
    if refusal.get("step") == "process_payments":
        return error(403, "Payment has failed")
    match refusal["code"]:
        case "insufficient_stock":
            return error(422, "Insufficient stock levels")
        case "promotions_ineligible":
            return invalid(COUPON_INVALID)  # the coupon is removed from the basket, as in Solidus
        case "cart_changed":
            return error(409, "The basket changed while the order was being processed; please check it and"
                              " try again.")
        case _:
            return error(422, refusal["message"])


# -- catalog ------------------------------------------------------------------------
@router.get("/products")
async def products(request: Request):
    currency = currency_of(request)
    rows = (await call(request, "cart", "GET", "/products")).json()
    catalog = await variants(request, currency)
    with_variants = "variants" in includes_of(request)
    data = []
    for product in rows:
        own = [render_variant(v) for v in catalog.values() if v["product_id"] == product["id"]]
        if not own:
            continue
        item = {"id": MAIN.encode(product["id"]), "name": product["name"], "slug": product["slug"],
                "description": product["description"]}
        if with_variants:
            item["variants"] = {"data": own}
        data.append(item)
    return respond({"data": data})
