"""Who may call which service operation over HTTP: one credential per caller, each scoped to
the operations that caller needs.

A caller shows its key in `X-Service-Key`. The gateway's key (`TILLSTREAM_GATEWAY_KEY`) opens
the operations the public dialects use and nothing else; the operator's key
(`TILLSTREAM_OPERATOR_KEY`: `make run`'s demo data, reference-data loaders, the tests'
set-up) opens only the loaders. A leaked gateway key cannot rewrite prices, coupons or stock;
a leaked operator key cannot cancel or capture. The order service's key
(`TILLSTREAM_ORDER_KEY`) opens what it calls of its participants when they run apart: the
payment a GetCandy `process` creates, the shipments a checkout's delivery asks for, the
completion saga's steps. With no key configured for a caller, nothing is accepted from it
(fails closed); keys are compared in constant time.
"""
from __future__ import annotations

import hmac
from typing import Mapping

SERVICE_KEY_HEADER = "X-Service-Key"
# The event a service-to-service call is caused by (the saga's step: the answer that led to
# it), so the callee's events carry it as their causation id (shared/service.py:RequestContext).
CAUSATION_HEADER = "X-Causation-Id"
# The shortest key a production start accepts (shared/safety.py): 128 bits as hex.
MIN_KEY_LENGTH = 32

GATEWAY = "gateway"
OPERATOR = "operator"
ORDER = "order"  # the order service calling its participants (GetCandy's process, delivery, the saga's steps)

# Kept in step with the services' interfaces (the Protocols in services/*/api.py) and the
# gateway's calls; tests/test_internal_surfaces.py checks that every Protocol method belongs to
# exactly one caller and that every name here is a Protocol method.
SCOPES: dict[str, dict[str, frozenset[str]]] = {
    GATEWAY: {
        "cart": frozenset({"add_line_item", "set_line_quantity", "remove_line_item", "empty_cart", "apply_coupon",
                           "remove_coupon", "find_line", "list_variants", "discard_variant", "discarded_among",
                           "list_products"}),
        "order": frozenset({"create_order", "update_details", "update_contact", "update_and_advance", "advance",
                            "complete", "cancel", "get_order", "access_facts", "wait_applied", "countries", "process"}),
        "shipping": frozenset({"select_rate", "select_method", "find_shipment", "stock", "estimated_rates",
                               "unavailable"}),
        "payment": frozenset({"create_payment", "capture_payment", "void_payment", "payment_methods"}),
    },
    OPERATOR: {
        "cart": frozenset({"load_catalog", "load_promotions"}),
        "order": frozenset({"load_tax_rates", "load_countries"}),
        "shipping": frozenset({"load_reference"}),
        "payment": frozenset({"load_payment_methods"}),
    },
    ORDER: {
        "cart": frozenset({"lock_cart", "unlock_cart"}),
        "shipping": frozenset({"build_shipments", "allocate_stock", "release_stock"}),
        "payment": frozenset({"create_payment", "payment_methods", "process_payments", "void_payments"}),
    },
}


def caller_of(keys: Mapping[str, str], given: str | None) -> str | None:
    """The caller whose configured key is `given` (None: no such caller). Every configured
    key is compared, in constant time, whichever matches."""
    if not given:
        return None
    found = None
    for caller, key in keys.items():
        if key and hmac.compare_digest(given.encode(), key.encode()):
            found = caller
    return found


def may_call(caller: str, service: str, operation: str) -> bool:
    return operation in SCOPES.get(caller, {}).get(service, frozenset())
