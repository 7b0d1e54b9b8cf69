"""Demo data for `make run`, loaded through the services' own admin APIs (idempotent).

See the README's "Demo data" section for what it contains.
"""
from __future__ import annotations

from tillstream.system import System

PRODUCTS = [
    {"id": 1, "name": "Solidus T-Shirt", "slug": "solidus-t-shirt", "description": "A soft cotton tee.",
     "variants": [{"id": 1, "sku": "TS-S", "name": "Solidus T-Shirt", "options_text": "Size: S",
                   "prices": {"USD": "19.99", "GBP": "10.00"}},
                  {"id": 2, "sku": "TS-M", "name": "Solidus T-Shirt", "options_text": "Size: M",
                   "prices": {"USD": "19.99", "GBP": "10.00"}}]},
    {"id": 2, "name": "Ruby Mug", "slug": "ruby-mug", "description": "Holds 350 ml.",
     "variants": [{"id": 3, "sku": "MUG-1", "name": "Ruby Mug", "is_master": True,
                   "prices": {"USD": "12.50", "GBP": "8.00"}}]},
    {"id": 3, "name": "Limited Poster", "slug": "limited-poster", "description": "Only 3 printed.",
     "variants": [{"id": 4, "sku": "POSTER-LTD", "name": "Limited Poster", "is_master": True,
                   "prices": {"USD": "30.00", "GBP": "25.00"}}]},
    {"id": 4, "name": "Gift Card", "slug": "gift-card", "description": "Digital; never runs out.",
     "variants": [{"id": 5, "sku": "GIFT-25", "name": "Gift Card", "is_master": True, "track_inventory": False,
                   "prices": {"USD": "25.00", "GBP": "20.00"}}]},
    {"id": 5, "name": "Enamel Pin", "slug": "enamel-pin", "description": "Stocked in two warehouses.",
     "variants": [{"id": 6, "sku": "PIN-1", "name": "Enamel Pin", "is_master": True,
                   "prices": {"USD": "6.00", "GBP": "5.00"}}]},
    {"id": 6, "name": "Preorder Hoodie", "slug": "preorder-hoodie", "description": "Not made yet: sold on backorder.",
     "variants": [{"id": 7, "sku": "HOODIE-PRE", "name": "Preorder Hoodie", "is_master": True,
                   "prices": {"USD": "45.00", "GBP": "40.00"}}]},
]

PROMOTIONS = [
    {"id": 1, "name": "10 off", "code": "10off", "kind": "order_flat", "value": "10.00", "currency": "USD"},
    {"id": 2, "name": "15 percent", "code": "15percent", "kind": "items_percent", "value": "15"},
    {"id": 3, "name": "Summer 2020", "code": "summer2020", "kind": "order_flat", "value": "5.00",
     "starts_at": "2020-06-01T00:00:00+00:00", "expires_at": "2020-09-01T00:00:00+00:00"},
    {"id": 4, "name": "Welcome (single use)", "code": "welcome", "kind": "order_flat", "value": "5.00",
     "usage_limit": 1},
]


US_STATES = [("Alabama", "AL"), ("Alaska", "AK"), ("Arizona", "AZ"), ("California", "CA"), ("Colorado", "CO"),
             ("Florida", "FL"), ("Georgia", "GA"), ("Illinois", "IL"), ("New York", "NY"), ("Oregon", "OR"),
             ("Texas", "TX"), ("Washington", "WA")]

COUNTRIES = [
    {"id": 1, "iso": "US", "iso3": "USA", "iso_name": "UNITED STATES", "name": "United States", "numcode": 840,
     "states_required": True,
     "states": [{"id": i + 1, "name": name, "abbr": abbr} for i, (name, abbr) in enumerate(US_STATES)]},
    {"id": 2, "iso": "GB", "iso3": "GBR", "iso_name": "UNITED KINGDOM", "name": "United Kingdom", "numcode": 826,
     "states_required": False, "states": []},
]

SHIPPING = {
    "zones": [{"id": 1, "name": "US", "description": "United States", "countries": ["US"]},
              {"id": 2, "name": "United Kingdom", "description": "United Kingdom", "countries": ["GB"]}],
    "stock_locations": [
        {"id": 1, "name": "Main Warehouse", "stock": [
            {"variant_id": 1, "count_on_hand": 1000}, {"variant_id": 2, "count_on_hand": 1000},
            {"variant_id": 3, "count_on_hand": 500}, {"variant_id": 4, "count_on_hand": 3},
            {"variant_id": 6, "count_on_hand": 2}, {"variant_id": 7, "count_on_hand": 0, "backorderable": True}]},
        {"id": 2, "name": "East Coast Depot", "stock": [{"variant_id": 6, "count_on_hand": 10}]}],
    "shipping_methods": [
        {"id": 1, "name": "Ground", "code": "GRND", "cost": "10.00", "currency": "USD", "zone_ids": [1]},
        {"id": 2, "name": "Express", "code": "EXPR", "cost": "15.00", "currency": "USD", "zone_ids": [1]},
        {"id": 3, "name": "UK Standard", "code": "UKSTD", "cost": "7.95", "currency": "GBP", "zone_ids": [2]},
    ],
}


PAYMENT_METHODS = [
    {"id": 1, "name": "Check", "method_type": "check", "handle": "offline"},
    {"id": 2, "name": "Credit Card", "method_type": "gateway", "auto_capture": False, "handle": "card"},
]

TAX_RATES = [{"currency": "GBP", "rate": "0.20"}, {"currency": "USD", "rate": "0"}]


def load_demo_data(system: System) -> list[str]:
    """Through the services' own operations (the service credential), in either topology."""
    system.call("cart", "load_catalog", products=PRODUCTS)
    system.call("cart", "load_promotions", promotions=PROMOTIONS)
    system.call("order", "load_countries", countries=COUNTRIES)
    system.call("order", "load_tax_rates", rates=TAX_RATES)
    system.call("shipping", "load_reference", **SHIPPING)
    system.call("payment", "load_payment_methods", methods=PAYMENT_METHODS)
    variants = ", ".join(f"{v['id']} {v['sku']} ${v['prices']['USD']}" for p in PRODUCTS for v in p["variants"])
    return [
        f"  demo variants         {variants}",
        "  demo coupon codes     10off (-10.00), 15percent (-15% of items), summer2020 (expired),"
        " welcome (single use)",
        "  demo shipping         US (states required) and GB; Ground 10.00 and Express 15.00 to the US"
        " (per shipment)",
        "  demo stock            Main Warehouse and East Coast Depot; 3 Limited Posters; Enamel Pins 2 + 10"
        " (more than 2 ship split); Preorder Hoodies backordered; Gift Cards untracked",
        "  demo payment methods  1 Check (no source), 2 Credit Card (test gateway: 4111111111111111 authorises,"
        " other numbers are declined)",
        "  GetCandy channel      GBP with 20% VAT; UK zone \"United Kingdom\" at 7.95; provider Offline (\"OFFLINE\");"
        " payment type `card` (tokens tok_ok / tok_declined)",
    ]
