"""Watch a checkout happen: a Solidus guest checkout and a GetCandy one against a running system.

    make demo                                   # against the system `make run` started
    python -m examples.checkout [--gateway http://127.0.0.1:8000] [--dialect solidus|getcandy|both]

Each request is printed with its answer's status and the fields that moved, in the order of the
README's walk-throughs; a status other than the README's stops it with exit 1. Guest tokens and
GetCandy ids open orders, so they are shortened in what it prints.
"""
from __future__ import annotations

import argparse
import json
import sys

import httpx

ADDRESS = {"name": "Ada Lovelace", "address1": "1 Main St", "city": "Portland", "zipcode": "97201",
           "phone": "555-0100", "country_iso": "US", "state_name": "OR"}
CARD = {"number": "4111111111111111", "month": 12, "year": 2030, "verification_value": "123",
        "name": "Ada Lovelace"}
UK = {"firstname": "Ada", "lastname": "Lovelace", "address": "1 High St", "city": "Chelmsford", "county": "Essex",
      "zip": "CM2 5TH", "country": "United Kingdom"}
SHOWN = ("state", "status", "total", "item_total", "ship_total", "order_total", "sub_total", "tax_total",
         "delivery_total", "payment_state", "shipment_state", "reference", "success")


class UnexpectedAnswer(Exception):
    pass


def short(secret: str) -> str:
    return f"{secret[:4]}…" if isinstance(secret, str) and len(secret) > 6 else secret


class Walk:
    def __init__(self, client: httpx.Client) -> None:
        self.client, self.step = client, 0
        self.secrets: set[str] = set()

    def __call__(self, title: str, method: str, path: str, expected: int, **kwargs) -> dict | list:
        self.step += 1
        response = self.client.request(method, path, **kwargs)
        shown_path = path
        for secret in self.secrets:
            shown_path = shown_path.replace(secret, short(secret))
        print(f"{self.step:>2}. {title}\n    {method} {shown_path} → {response.status_code}", end="")
        body = response.json() if response.content else {}
        data = body.get("data", body) if isinstance(body, dict) else body
        if isinstance(data, dict):
            moved = {k: data[k] for k in SHOWN if data.get(k) is not None}
            print(f"  {json.dumps(moved)}" if moved else "")
        else:
            print(f"  ({len(data)} items)")
        if response.status_code != expected:
            raise UnexpectedAnswer(f"{method} {shown_path}: expected {expected}, got {response.status_code}:"
                                   f" {response.text[:300]}")
        return body


def solidus(client: httpx.Client) -> None:
    print("== Solidus: a guest checks out in 11 requests (README: Checking out with curl, Solidus dialect)")
    walk = Walk(client)
    order = walk("Create an order; keep its number and guest token", "POST", "/api/orders", 201, json={})
    number, token = order["number"], order["token"]
    walk.secrets.add(token)
    guest = {"X-Spree-Order-Token": token}
    walk("Fill the cart", "POST", f"/api/checkouts/{number}/line_items", 201, headers=guest,
         json={"line_item": {"variant_id": 1, "quantity": 2}})
    walk("A coupon", "POST", f"/api/orders/{number}/coupon_codes", 200, headers=guest, json={"coupon_code": "10off"})
    walk("cart → address", "PUT", f"/api/checkouts/{number}/next", 200, headers=guest)
    delivery = walk("Email and addresses: on to delivery, with shipments and rates", "PATCH",
                    f"/api/checkouts/{number}", 200, headers=guest,
                    json={"order": {"email": "ada@example.com", "use_billing": True,
                                    "bill_address_attributes": ADDRESS}})
    shipment = delivery["shipments"][0]["number"]
    walk("The shipment's rates", "GET", f"/api/shipments/{shipment}/estimated_rates", 200, headers=guest)
    walk("Pick Express", "PUT", f"/api/shipments/{shipment}/select_shipping_method", 200, headers=guest,
         json={"shipping_method_id": 2})
    payment = walk("delivery → payment", "PUT", f"/api/checkouts/{number}/next", 200, headers=guest)
    walk("A card payment for the total", "POST", f"/api/orders/{number}/payments", 201, headers=guest,
         json={"payment": {"payment_method_id": 2, "amount": payment["total"], "source_attributes": CARD}})
    walk("payment → confirm", "PUT", f"/api/checkouts/{number}/next", 200, headers=guest)
    done = walk("Complete: the saga locks the cart, takes the stock, authorises the card", "PUT",
                f"/api/checkouts/{number}/complete", 200, headers=guest)
    if done.get("state") != "complete":
        raise UnexpectedAnswer(f"the order is {done.get('state')}, not complete")


def getcandy(client: httpx.Client) -> None:
    print("== GetCandy: the same domain behind GetCandy's routes (README: Checking out with curl, GetCandy dialect)")
    walk = Walk(client)
    products = walk("Products with their variants", "GET", "/api/v1/products?include=variants", 200)
    variant = products["data"][0]["variants"]["data"][0]["id"]
    basket = walk("A basket with two of the first variant", "POST", "/api/v1/basket-lines", 200,
                  json={"variants": [{"id": variant, "quantity": 2}]})["data"]["id"]
    walk.secrets.add(basket)
    order = walk("An order from the basket", "POST", "/api/v1/orders", 200, json={"basket_id": basket})["data"]["id"]
    walk.secrets.add(order)
    base = f"/api/v1/orders/{order}"
    walk("Shipping address", "PUT", f"{base}/shipping/address", 200, json=UK)
    methods = walk("Shipping methods for it", "GET", f"{base}/shipping/methods", 200)["data"]
    walk("Pick the first", "PUT", f"{base}/shipping/cost", 200, json={"price_id": methods[0]["id"]})
    walk("Contact details", "PUT", f"{base}/contact", 200, json={"email": "ada@example.com", "phone": "01245 000000"})
    walk("Billing address", "PUT", f"{base}/billing/address", 200, json=UK)
    walk("The payment provider", "GET", "/api/v1/payments/provider", 200)
    walk("Payment types", "GET", "/api/v1/payments/types", 200)
    placed = walk("Process: the same completion saga as Solidus's complete", "POST", "/api/v1/orders/process", 200,
                  json={"order_id": order, "payment_token": "OFFLINE"})["data"]
    if placed.get("status") != "payment-processing":
        raise UnexpectedAnswer(f"the order is {placed.get('status')}, not payment-processing")


def default_gateway() -> str:
    try:
        from tillstream.locate import locate

        return locate().gateway_url or "http://127.0.0.1:8000"
    except Exception:  # noqa: BLE001 (no record: the README's default address)
        return "http://127.0.0.1:8000"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateway", help="The gateway's URL (default: the system make run recorded, else :8000)")
    parser.add_argument("--dialect", choices=("solidus", "getcandy", "both"), default="both")
    args = parser.parse_args()
    gateway = args.gateway or default_gateway()
    print(f"gateway {gateway}")
    try:
        with httpx.Client(base_url=gateway, timeout=30) as client:
            if args.dialect in ("solidus", "both"):
                solidus(client)
            if args.dialect in ("getcandy", "both"):
                getcandy(client)
    except (UnexpectedAnswer, httpx.HTTPError) as failure:
        print(f"\nstopped: {failure}", file=sys.stderr)
        return 1
    print("\nboth checkouts went through" if args.dialect == "both" else "\nthe checkout went through")
    return 0


if __name__ == "__main__":
    sys.exit(main())
