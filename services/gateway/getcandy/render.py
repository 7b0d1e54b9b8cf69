"""GetCandy's JSON shapes (getcandy-api.md §2-3): baskets in major units, orders in integer
minor units, money written from Decimal digit for digit."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi.responses import Response

from services.gateway.availability import Availability
from services.gateway.getcandy.ids import BASKET_LINES, BASKETS, MAIN, ORDER_LINES, ORDERS, SHIPPING_LINES, number_id
from shared.contracts.shipping import StockLevel
from shared.jsonutil import dumps_with_numbers
from shared.money import truncate_to_cents


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


def render_variant(variant: dict, available: Availability | None = None) -> dict:
    """GetCandy's variant. `inventory` is the stock on hand (null when not tracked: unlimited);
    `backorder` is GetCandy's policy: `always` sells beyond it, `in-stock` does not."""
    price = Decimal(variant["price"])
    tracked = variant.get("track_inventory", True)
    stock = available.stock if available else StockLevel()
    return {"id": MAIN.encode(variant["id"]), "sku": variant["sku"], "price": price, "unit_price": price,
            "inventory": stock.total_on_hand if tracked else None, "incoming": 0,
            "backorder": "always" if stock.backorderable or not tracked else "in-stock",
            "min_qty": 1, "min_batch": 1, "name": variant["name"], "options": variant.get("options_text", "")}


def render_basket(order: dict, availability: dict[int, Availability] | None = None) -> dict:
    lines = []
    rate = Decimal(order["tax_rate"])
    for line in order["line_items"]:
        unit = Decimal(line["price"])
        total = unit * line["quantity"]
        lines.append({
            "id": BASKET_LINES.encode(line["id"]), "quantity": line["quantity"], "line_total": total,
            "unit_price": unit, "unit_tax": truncate_to_cents(unit * rate), "line_discount": Decimal(0),
            "tax": truncate_to_cents(total * rate), "meta": [],
            "variant": {"data": render_variant({**line["variant"], "price": line["price"]},
                                               (availability or {}).get(line["variant_id"]))},
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
        "id": ORDER_LINES.encode(line["id"]), "quantity": line["quantity"],
        "line_total": minor(Decimal(line["price"]) * line["quantity"]), "discount_total": 0, "delivery_total": 0,
        "unit_price": minor(line["price"]), "unit_qty": 1,
        "tax_total": minor(truncate_to_cents(Decimal(line["price"]) * line["quantity"] * rate)),
        "tax_rate": int(rate * 100), "description": line["variant"]["name"],
        "option": line["variant"].get("options_text", ""), "sku": line["variant"]["sku"], "is_shipping": False,
        "is_manual": False, "meta": []} for line in order["line_items"]]
    shipping_line = None if selected is None else {
        "id": SHIPPING_LINES.encode(selected["id"]), "quantity": 1, "line_total": minor(selected["cost"]),
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
