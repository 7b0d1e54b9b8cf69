"""The Solidus-style checkout API (`/api/...`): routes, auth and JSON shapes of solidus_api.

Each route authorises the caller against the order view, sends one command to the
owning service, waits (bounded) until the order view has applied the events that
command caused, and answers in Solidus's shape. See ../shared/research/solidus-api.md.
"""
from __future__ import annotations

import hmac
import os
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request

from services.gateway.paths import Code, Hash, Id, OrderNumber  # noqa: F401
from fastapi.responses import Response

from shared.jsonutil import json_response
from shared.validation import MAX_JSON_DEPTH, BadJson, ascii_int, parse_json_object

router = APIRouter(prefix="/api")

NOT_FOUND = {"error": "The resource you were looking for could not be found."}
UNAUTHORIZED = {"error": "You are not authorized to perform that action."}
INVALID_RESOURCE = "Invalid resource. Please fix errors and try again."
CURRENCY_SYMBOLS = {"USD": "$", "GBP": "£", "EUR": "€"}
VIEW_WAIT_MS = int(os.environ.get("GATEWAY_VIEW_WAIT_MS", "3000"))
COMPLETE_WAIT_MS = int(os.environ.get("GATEWAY_COMPLETE_WAIT_MS", "10000"))
# Solidus's `requires_authentication`: off by default, so guests check out with the order token.
REQUIRE_API_KEY = os.environ.get("SOLIDUS_REQUIRE_API_KEY", "false").lower() in ("1", "true", "yes")


class ApiError(Exception):
    """A Solidus error: its status and body (a JSON object, or plain text for the order lock)."""

    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        self.status = status
        self.body = body


def invalid_resource(errors: dict[str, list[str]]) -> ApiError:
    return ApiError(422, {"error": INVALID_RESOURCE, "errors": errors})


def could_not_transition(errors: dict[str, list[str]]) -> ApiError:
    return ApiError(422, {"error": "The order could not be transitioned. Please fix the errors and try again.",
                          "errors": errors})


def insufficient_stock() -> ApiError:
    return ApiError(422, {"errors": ["Quantity is not available for items in your order"],
                          "type": "insufficient_stock"})


def missing_param(name: str) -> ApiError:
    message = f"param is missing or the value is empty: {name}"
    return ApiError(422, {"exception": message, "error": message, "missing_param": name})


def admin_key() -> str:
    return os.environ.get("TILLSTREAM_ADMIN_KEY", "")


# -- request parsing ------------------------------------------------------------
async def params(request: Request) -> dict[str, Any]:
    """Query string, then a JSON or form body on top, as Rails merges them."""
    merged: dict[str, Any] = {k: v[-1] for k, v in parse_qs(request.url.query).items()}
    raw = await request.body()
    if raw.strip():
        content_type = request.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in content_type:
            merged.update(_nest_form(parse_qs(raw.decode(errors="replace"), max_num_fields=MAX_FORM_FIELDS)))
        else:
            try:
                merged.update(parse_json_object(raw))
            except BadJson as bad:
                raise ApiError(400, {"error": str(bad)}) from None
    return merged


MAX_FORM_FIELDS = 200


def _nest_form(form: dict[str, list[str]]) -> dict[str, Any]:
    """`line_item[variant_id]=1` → {"line_item": {"variant_id": "1"}}. A key that is both a
    value and a nest (`order=x&order[email]=y`) is refused, as Rails refuses it (400)."""
    result: dict[str, Any] = {}
    for key, values in form.items():
        parts = key.replace("]", "").split("[")
        if len(parts) > MAX_JSON_DEPTH:
            raise ApiError(400, {"error": f"The request body nests deeper than {MAX_JSON_DEPTH} levels."})
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ApiError(400, {"error": f"The form field {part!r} is both a value and a nest."})
        if isinstance(target.get(parts[-1]), dict):
            raise ApiError(400, {"error": f"The form field {parts[-1]!r} is both a value and a nest."})
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


# -- auth -----------------------------------------------------------------------
def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("token")


MAX_TOKEN_LENGTH = 64


def _order_token(request: Request, body: dict[str, Any] | None = None) -> str | None:
    token = request.headers.get("x-spree-order-token") or (body or {}).get("order_token") \
        or request.query_params.get("order_token")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return None if token is None else ""  # present but unusable: refused like a wrong token
    return token


def is_admin(request: Request) -> bool:
    """A caller with the admin API key. Fails closed: with no key configured nobody is an
    admin; keys are compared in constant time, and a wrong one is not echoed back (unlike
    Solidus's "Invalid API key (<key>) specified.": it may be a mistyped secret)."""
    key = _bearer(request)
    if key is None:
        return False
    configured = admin_key()
    if not configured or not hmac.compare_digest(key.encode(), configured.encode()):
        raise ApiError(401, {"error": "Invalid API key specified."})
    return True


async def fetch_order(request: Request, number: str, after: list[str] | None = None) -> dict | None:
    """The order view, once it has applied the events in `after` (bounded wait)."""
    query: dict[str, Any] = {"timeout_ms": VIEW_WAIT_MS}
    if after:
        query["after"] = ",".join(after)
    # The HTTP timeout outlasts the wait, so a slow view answers stale, never a timeout.
    response = await request.app.state.services.call("order", "GET", f"/orders/{number}", params=query,
                                                     timeout=VIEW_WAIT_MS / 1000 + 5)
    return response.json() if response.status_code == 200 else None


async def await_view(request: Request, number: str, events: list[str]) -> None:
    """Read-your-writes for a caller that does not need the order itself: return once the
    order view has applied `events` (or the bounded wait ran out)."""
    if events:
        await request.app.state.services.call(
            "order", "GET", f"/orders/{number}/applied", params={"after": ",".join(events), "timeout_ms": VIEW_WAIT_MS},
            timeout=VIEW_WAIT_MS / 1000 + 5)


def with_view(timeout_ms: int = VIEW_WAIT_MS) -> dict[str, int]:
    """Query parameters asking an order-service command to answer with the order view too
    (after what it awaits has settled): one round trip instead of two."""
    return {"view_wait_ms": timeout_ms}


async def authorize(request: Request, number: str, *, update: bool, body: dict | None = None) -> dict:
    """The order, if the caller may see it (admin key, or the order's own token; a token is
    fixed for the order's life, so this read cannot go stale).

    Whether it may still change is not judged here: the service that owns what changes
    refuses (the Order once placed or while completing, the cart once locked, shipments once
    allocated), and `command` renders the refusal as Solidus would (`update` is kept for the
    callers' intent: 401 to a guest who changes a placed order).
    """
    admin = is_admin(request)
    token = _order_token(request, body)
    order = await fetch_order(request, number)
    if admin:
        if order is None:
            raise ApiError(404, NOT_FOUND)
        return order
    # A token for an unknown order is refused like a wrong token, as Solidus does.
    if order is None or not isinstance(token, str) or not hmac.compare_digest(token.encode(),
                                                                                order["guest_token"].encode()):
        raise ApiError(401, UNAUTHORIZED)
    return order


def guest_headers(request: Request, body: dict) -> dict[str, str] | None:
    """`X-Order-Token` for a guest's step the order service may authorise by itself: none
    for an admin, for a caller without a token, and when the step needs the order first."""
    if is_admin(request) or body.get("expected_total") is not None:
        return None
    token = _order_token(request, body)
    return {"X-Order-Token": token} if token else None


PLACED = "The order has been placed and can no longer be changed."
# The refusals of an order that is completing or placed, whichever service owns the change.
LOCKED_CODES = ("order_locked", "order_placed", "cart_locked", "shipments_locked")


def refused_while_locked(request: Request, number: str, code: str, placed: bool) -> ApiError:
    """Solidus's answers: a placed order is not the guest's to update any more (CanCan: 401;
    an admin gets invalid_resource); a completing one holds the order lock (OrderMutex: 409)."""
    if placed or code == "order_placed":
        if is_admin(request):
            return invalid_resource({"base": [PLACED]})
        return ApiError(401, UNAUTHORIZED)
    return ApiError(409, f"Could not obtain lock on order {number}")


async def command(request: Request, service: str, method: str, path: str, *, json_body: Any = None,
                  params: dict | None = None, errors: dict[str, ApiError] | None = None,
                  headers: dict[str, str] | None = None, order: dict | None = None) -> dict:
    """Send a command; map the service's refusal onto a Solidus error (`order`: the order as
    the caller was authorised with, to tell a placed order from a completing one)."""
    response = await request.app.state.services.call(service, method, path, json=json_body, params=params,
                                                     headers=headers)
    if response.status_code < 300:
        return response.json()
    problem = response.json()
    code = problem.get("code")
    if errors and code in errors:
        raise errors[code]
    details = problem.get("details") or {}
    if code in LOCKED_CODES:
        number = path.split("/")[2]
        raise refused_while_locked(request, number, code, placed=bool(order and order.get("completed_at")))
    if code == "unauthorized":
        raise ApiError(401, UNAUTHORIZED)
    if code == "could_not_transition":
        raise could_not_transition(details.get("errors", {}))
    if code == "invalid_resource":
        raise invalid_resource(details.get("errors", {}))
    if response.status_code == 404:
        raise ApiError(404, NOT_FOUND)
    field = (problem.get("details") or {}).get("field", "base")
    raise invalid_resource({field: [problem.get("message", "is invalid")]})


# -- rendering ------------------------------------------------------------------
def money(value: Any) -> str:
    text = format(Decimal(str(value)).normalize(), "f")
    return text if "." in text else text + ".0"


def display(value: Any, currency: str) -> str:
    amount = Decimal(str(value))
    sign = "-" if amount < 0 else ""
    return f"{sign}{CURRENCY_SYMBOLS.get(currency, '')}{abs(amount):,.2f}"


def render_variant(variant: dict, currency: str) -> dict:
    return {
        "id": variant["id"], "name": variant["name"], "sku": variant["sku"], "price": money(variant["price"]),
        "display_price": display(variant["price"], currency), "options_text": variant.get("options_text", ""),
        "track_inventory": variant.get("track_inventory", True), "product_id": variant["product_id"],
        "is_master": variant.get("is_master", False), "slug": variant.get("slug"),
        "description": variant.get("description"), "option_values": [], "images": [],
    }


def render_line_item(line: dict, currency: str) -> dict:
    price = Decimal(str(line["price"]))
    amount = price * line["quantity"]
    return {
        "id": line["id"], "quantity": line["quantity"], "price": money(price), "variant_id": line["variant_id"],
        "customer_metadata": {}, "single_display_amount": display(price, currency),
        "display_amount": display(amount, currency), "total": money(amount),
        "variant": render_variant({**line["variant"], "price": price}, currency), "adjustments": [],
    }


def render_adjustment(adjustment: dict, order: dict, index: int) -> dict:
    return {
        "id": adjustment["promotion_id"], "source_type": "Spree::PromotionAction",
        "source_id": adjustment["promotion_id"], "adjustable_type": "Spree::Order", "adjustable_id": order["number"],
        "amount": money(adjustment["amount"]), "label": adjustment["label"], "finalized": False,
        "display_amount": display(adjustment["amount"], order["currency"]),
        "created_at": order["created_at"], "updated_at": order["updated_at"],
    }


def render_rate(rate: dict, currency: str) -> dict:
    return {"id": rate["id"], "name": rate["name"], "cost": money(rate["cost"]), "selected": rate["selected"],
            "shipping_method_id": rate["shipping_method_id"], "shipping_method_code": rate["code"],
            "display_cost": display(rate["cost"], currency)}


def render_shipment(shipment: dict, order: dict) -> dict:
    currency = order["currency"]
    rates = [render_rate(r, currency) for r in shipment["rates"]]
    selected = next((r for r in rates if r["selected"]), None)
    return {
        "id": shipment["id"], "tracking": None, "tracking_url": None, "number": shipment["number"],
        "cost": selected["cost"] if selected else "0.0", "shipped_at": None, "state": shipment["state"],
        "customer_metadata": {}, "order_id": order["number"], "stock_location_name": shipment["stock_location_name"],
        "shipping_rates": rates, "selected_shipping_rate": selected,
        "shipping_methods": [{"id": r["shipping_method_id"], "code": r["shipping_method_code"], "name": r["name"],
                              "zones": [], "shipping_categories": []} for r in rates],
        "manifest": [{"variant_id": m["variant_id"], "quantity": m["quantity"], "states": {"on_hand": m["quantity"]}}
                     for m in shipment["manifest"]],
        "adjustments": [],
    }


def render_address(address: dict | None, countries: dict[int, dict]) -> dict | None:
    if address is None:
        return None
    country = countries.get(address["country_id"], {})
    state = next((s for s in country.get("states", []) if s["id"] == address.get("state_id")), None)
    return {
        **{k: address.get(k) for k in ("id", "name", "address1", "address2", "city", "zipcode", "phone", "company",
                                       "alternative_phone", "country_id", "state_id", "state_name")},
        "country_iso": address["country_iso"], "state_text": state["abbr"] if state else address.get("state_name"),
        "email": None, "vat_id": None, "reverse_charge_status": "disabled",
        "country": {k: country.get(k) for k in ("id", "iso_name", "iso", "iso3", "name", "numcode")},
        "state": {"id": state["id"], "name": state["name"], "abbr": state["abbr"], "country_id": country.get("id")}
        if state else None,
    }


def render_payment(payment: dict, currency: str) -> dict:
    source = payment.get("source")
    return {
        "id": payment["id"], "source_type": "Spree::CreditCard" if source else None,
        "source_id": source["id"] if source else None, "amount": money(payment["amount"]),
        "display_amount": display(payment["amount"], currency), "payment_method_id": payment["payment_method_id"],
        "state": payment["state"], "avs_response": payment.get("avs_response"),
        "created_at": payment["created_at"], "updated_at": payment["updated_at"], "customer_metadata": {},
        "payment_method": {"id": payment["payment_method_id"], "name": payment["payment_method_name"]},
        "source": {k: source.get(k) for k in ("id", "month", "year", "cc_type", "last_digits", "name")}
        if source else None,
    }


def render_payment_method(method: dict) -> dict:
    gateway = method["method_type"] == "gateway"
    return {"id": method["id"], "name": method["name"], "partial_name": "gateway" if gateway else "check",
            "method_type": "gateway" if gateway else "check"}


def render_order(order: dict, *, admin: bool = False, countries: dict[int, dict] | None = None,
                 payment_methods: list[dict] | None = None) -> dict:
    currency = order["currency"]
    total = money(order.get("total", "0"))
    steps = ["address", "delivery", "payment", "confirm", "complete"]
    if Decimal(total) == 0:
        steps.remove("payment")
    amounts = {name: order.get(name, "0") for name in
               ("item_total", "ship_total", "adjustment_total", "payment_total", "total")}
    body = {
        "id": order["number"], "number": order["number"], "state": order["state"],
        "email": order.get("email"), "user_id": order.get("user_id"), "currency": currency,
        "created_at": order["created_at"], "updated_at": order["updated_at"],
        "completed_at": order.get("completed_at"), "payment_state": order.get("payment_state"),
        "shipment_state": order.get("shipment_state"), "special_instructions": order.get("special_instructions"),
        "channel": "spree", "included_tax_total": "0.0",
        "additional_tax_total": money(order.get("additional_tax_total", 0)),
        "tax_total": money(order.get("additional_tax_total", 0)),
        "display_included_tax_total": display(0, currency),
        "display_additional_tax_total": display(order.get("additional_tax_total", 0), currency),
        "display_tax_total": display(order.get("additional_tax_total", 0), currency), "total_quantity": order.get("total_quantity", 0),
        "token": order["guest_token"], "checkout_steps": steps, "canceler_id": None, "customer_metadata": {},
        "line_items": [render_line_item(line, currency) for line in order.get("line_items", [])],
        "adjustments": [render_adjustment(a, order, i) for i, a in enumerate(order.get("adjustments", []))],
        "payments": [render_payment(p, currency) for p in order.get("payments", [])],
        "shipments": [render_shipment(sh, order) for sh in order.get("shipments", [])],
        "bill_address": render_address(order.get("bill_address"), countries or {}),
        "ship_address": render_address(order.get("ship_address"), countries or {}),
        "payment_methods": [render_payment_method(m) for m in payment_methods or []], "credit_cards": [],
        "permissions": {"can_update": admin},
    }
    for name, value in amounts.items():
        body[name] = money(value)
        body[f"display_{name}"] = display(value, currency)
    return body


REFERENCE_TTL_S = float(os.environ.get("GATEWAY_REFERENCE_TTL_S", "30"))


async def reference(request: Request, name: str, service: str, path: str) -> Any:
    """Reference data (countries, payment methods) rendered into every order: cached
    briefly per gateway process, so an admin change shows within REFERENCE_TTL_S."""
    import time

    cache = request.app.state.__dict__.setdefault("reference", {})
    loaded_at, value = cache.get(name, (0.0, None))
    if value is None or time.monotonic() - loaded_at > REFERENCE_TTL_S:
        value = (await request.app.state.services.call(service, "GET", path)).json()
        cache[name] = (time.monotonic(), value)
    return value


async def countries_by_id(request: Request) -> dict[int, dict]:
    return {c["id"]: c for c in await reference(request, "countries", "order", "/countries")}


async def payment_methods(request: Request) -> list[dict]:
    return await reference(request, "payment_methods", "payment", "/payment_methods")


async def order_response(request: Request, order: dict, status_code: int = 200) -> Response:
    body = render_order(order, admin=is_admin(request), countries=await countries_by_id(request),
                        payment_methods=await payment_methods(request))
    return json_response(body, status_code=status_code)


# -- orders ---------------------------------------------------------------------
@router.post("/orders", status_code=201)
async def create_order(request: Request):
    admin = is_admin(request)
    if REQUIRE_API_KEY and not admin:
        raise ApiError(401, {"error": "You must specify an API key."})
    created = await command(request, "order", "POST", "/orders", json_body={}, params=with_view())
    return await order_response(request, created["order"], 201)


@router.get("/orders/{number}")
async def show_order(number: OrderNumber, request: Request):
    return await order_response(request, await authorize(request, number, update=False))


# -- line items -----------------------------------------------------------------
@router.post("/checkouts/{number}/line_items", status_code=201)
@router.post("/orders/{number}/line_items", status_code=201)
async def add_line_item(number: OrderNumber, request: Request) -> Response:
    body = await params(request)
    order = await authorize(request, number, update=True, body=body)
    line_item = require(body, "line_item")
    quantity = as_int(line_item.get("quantity", 1))
    result = await command(request, "cart", "POST", f"/orders/{number}/line_items", json_body={
        "variant_id": as_int(line_item.get("variant_id")), "quantity": quantity, "currency": order["currency"]},
        order=order)
    await await_view(request, number, result["events"])
    return json_response(render_line_item(result["line_item"], order["currency"]), status_code=201)


@router.api_route("/checkouts/{number}/line_items/{line_id}", methods=["PATCH", "PUT"])
async def update_line_item(number: str, line_id: Id, request: Request):
    body = await params(request)
    order = await authorize(request, number, update=True, body=body)
    line_item = require(body, "line_item")
    result = await command(request, "cart", "PATCH", f"/orders/{number}/line_items/{line_id}",
                           json_body={"quantity": as_int(line_item.get("quantity"))}, order=order)
    await await_view(request, number, result["events"])
    if result["line_item"] is None:  # quantity 0 removed the line
        return Response(status_code=204)
    return json_response(render_line_item(result["line_item"], order["currency"]))


@router.delete("/checkouts/{number}/line_items/{line_id}", status_code=204)
async def delete_line_item(number: str, line_id: Id, request: Request):
    order = await authorize(request, number, update=True, body=await params(request))
    result = await command(request, "cart", "DELETE", f"/orders/{number}/line_items/{line_id}", order=order)
    await await_view(request, number, result["events"])
    return Response(status_code=204)


@router.put("/orders/{number}/empty")
async def empty_order(number: OrderNumber, request: Request):
    order = await authorize(request, number, update=True, body=await params(request))
    result = await command(request, "cart", "PUT", f"/orders/{number}/empty", order=order)
    return await order_response(request, await fetch_order(request, number, result["events"]))


# -- coupon codes ---------------------------------------------------------------
COUPON_MESSAGES = {
    "coupon_code_applied": "The coupon code was successfully applied to your order.",
    "coupon_code_removed": "The coupon code was successfully removed from this order.",
}


def coupon_body(status_code: str | None, *, success: bool, message: str | None) -> dict:
    return {"success": message if success else None, "error": None if success else message,
            "successful": success, "status_code": status_code}


async def _coupon(request: Request, order: dict, method: str, code: str, done: str) -> Response:
    number = order["number"]
    response = await request.app.state.services.call("cart", method, f"/orders/{number}/coupon_codes"
                                                     + (f"/{code}" if method == "DELETE" else ""),
                                                     json={"code": code} if method == "POST" else None)
    if response.status_code >= 300:
        problem = response.json()
        if problem["code"] in LOCKED_CODES:
            raise refused_while_locked(request, number, problem["code"], placed=bool(order.get("completed_at")))
        return json_response(coupon_body(problem["code"], success=False, message=problem["message"]), 422)
    await await_view(request, number, response.json()["events"])
    return json_response(coupon_body(done, success=True, message=COUPON_MESSAGES[done]))


@router.post("/orders/{number}/coupon_codes")
async def apply_coupon(number: OrderNumber, request: Request):
    body = await params(request)
    order = await authorize(request, number, update=True, body=body)
    code = str(body.get("coupon_code") or "").strip().lower()
    if not code:
        return json_response(coupon_body(None, success=False, message=None), 422)
    return await _coupon(request, order, "POST", code, "coupon_code_applied")


@router.delete("/orders/{number}/coupon_codes/{code}")
async def remove_coupon(number: str, code: Code, request: Request):
    order = await authorize(request, number, update=True, body=await params(request))
    return await _coupon(request, order, "DELETE", code.strip().lower(), "coupon_code_removed")


# -- catalog --------------------------------------------------------------------
@router.get("/variants")
async def list_variants(request: Request):
    variants = (await request.app.state.services.call("cart", "GET", "/variants")).json()
    rendered = [render_variant(v, "USD") for v in variants if v["price"] is not None]
    return json_response({"variants": rendered, "count": len(rendered), "total_count": len(rendered),
                          "current_page": 1, "pages": 1, "per_page": max(len(rendered), 1)})


@router.get("/products")
async def list_products(request: Request):
    services = request.app.state.services
    products = (await services.call("cart", "GET", "/products")).json()
    variants = [v for v in (await services.call("cart", "GET", "/variants")).json() if v["price"] is not None]
    rendered = []
    for product in products:
        own = [render_variant(v, "USD") for v in variants if v["product_id"] == product["id"]]
        if not own:
            continue
        master = next((v for v in own if v["is_master"]), own[0])
        rendered.append({**product, "price": master["price"], "display_price": master["display_price"],
                         "has_variants": len(own) > 1, "master": master, "variants": own})
    return json_response({"products": rendered, "count": len(rendered), "total_count": len(rendered),
                          "current_page": 1, "pages": 1, "per_page": max(len(rendered), 1)})
