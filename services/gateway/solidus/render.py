"""Solidus's JSON shapes (research §4): orders, line items, shipments, payments, addresses."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from services.gateway.availability import Availability, availability
from services.gateway.reference import countries_by_id, payment_methods
from services.gateway.solidus.access import guest_token_shown, is_admin
from shared.contracts.shipping import StockLevel
from shared.jsonutil import json_response

CURRENCY_SYMBOLS = {"USD": "$", "GBP": "£", "EUR": "€"}


def money(value: Any) -> str:
    text = format(Decimal(str(value)).normalize(), "f")
    return text if "." in text else text + ".0"


def display(value: Any, currency: str) -> str:
    amount = Decimal(str(value))
    sign = "-" if amount < 0 else ""
    return f"{sign}{CURRENCY_SYMBOLS.get(currency, '')}{abs(amount):,.2f}"


def render_variant(variant: dict, currency: str, available: Availability | None = None,
                   *, stock_items: bool = False) -> dict:
    """Solidus's variant (its "small" partial; with `stock_items`, the "big" one of a show)."""
    tracked = variant.get("track_inventory", True)
    stock = available.stock if available else StockLevel()
    body = {
        "id": variant["id"], "name": variant["name"], "sku": variant["sku"], "price": money(variant["price"]),
        "display_price": display(variant["price"], currency), "options_text": variant.get("options_text", ""),
        "track_inventory": tracked, "product_id": variant["product_id"],
        "is_master": variant.get("is_master", False), "slug": variant.get("slug"),
        "description": variant.get("description"),
        # Untracked stock is unlimited: Solidus's total_on_hand is Infinity, written as null.
        "total_on_hand": stock.total_on_hand if tracked else None, "in_stock": stock.in_stock(tracked),
        "is_backorderable": stock.backorderable,
        "is_destroyed": bool(variant.get("is_destroyed")) or bool(available and available.discarded),
        "option_values": [], "images": [],
    }
    if stock_items:
        body["stock_items"] = [{"id": item.id, "count_on_hand": item.count_on_hand,
                                "stock_location_id": item.stock_location_id, "backorderable": item.backorderable,
                                "available": item.count_on_hand > 0 or item.backorderable,
                                "stock_location_name": item.stock_location_name} for item in stock.items]
    return body


def render_line_item(line: dict, currency: str, available: Availability | None = None) -> dict:
    price = Decimal(str(line["price"]))
    amount = price * line["quantity"]
    return {
        "id": line["id"], "quantity": line["quantity"], "price": money(price), "variant_id": line["variant_id"],
        "customer_metadata": {}, "single_display_amount": display(price, currency),
        "display_amount": display(amount, currency), "total": money(amount),
        "variant": render_variant({**line["variant"], "price": price}, currency, available), "adjustments": [],
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
        "manifest": [{"variant_id": m["variant_id"], "quantity": m["quantity"], "states": unit_states(m)}
                     for m in shipment["manifest"]],
        "adjustments": [],
    }


def unit_states(item: dict) -> dict[str, int]:
    """How many of a manifest item's inventory units are in each state (none: not listed)."""
    backordered = item.get("backordered", 0)
    states = {"on_hand": item["quantity"] - backordered, "backordered": backordered}
    return {state: n for state, n in states.items() if n}


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
                 payment_methods: list[dict] | None = None, availability: dict[int,
                                                                               Availability] | None = None) -> dict:
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
        "display_tax_total": display(order.get("additional_tax_total", 0),
                                     currency), "total_quantity": order.get("total_quantity", 0),
        "token": order.get("token"), "checkout_steps": steps, "canceler_id": None, "customer_metadata": {},
        "line_items": [render_line_item(line, currency, (availability or {}).get(line["variant_id"]))
                       for line in order.get("line_items", [])],
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


async def order_response(request: Request, order: dict, status_code: int = 200, *,
                         token: str | None = None) -> Response:
    """`token`: the guest token of an order just created (otherwise the one presented, if it is the order's)."""
    order = {**order, "token": token or guest_token_shown(request, order)}
    body = render_order(order, admin=is_admin(request), countries=await countries_by_id(request),
                        payment_methods=await payment_methods(request),
                        availability=await availability(request, (line["variant_id"] for line in order.get("line_items",
                                                                                                           []))))
    return json_response(body, status_code=status_code)


def listing(name: str, items: list) -> dict:
    """Solidus's paginated collection, all on one page."""
    return {name: items, "count": len(items), "total_count": len(items), "current_page": 1, "pages": 1,
            "per_page": max(len(items), 1)}
