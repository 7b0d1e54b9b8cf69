"""Who may do what (research §2): an admin's API key, or a guest's order token.

A guest's token is fixed for the order's life, so checking it against the order view
cannot go stale; nor against the order's access facts the gateway keeps (order_access.py),
which a route that needs nothing else of the order is authorised with. Both, like the
order's events, hold only the token's SHA-256: the check hashes what the guest presents and
compares digests in constant time. An order created through GetCandy is not reached
through these routes, except by an admin.
Whether the order may still change is not judged here: the service that owns what
changes refuses (the Order once placed or while completing, the cart once locked,
shipments once allocated), and errors.from_refusal renders it as Solidus would.
"""
from __future__ import annotations

import hmac
import os
from typing import Any, Mapping, TypeVar

from fastapi import Request

from services.gateway.order_access import access_facts
from services.gateway.reference import fetch_order
from services.gateway.solidus.errors import NOT_FOUND, UNAUTHORIZED, ApiError
from services.order.api import AccessFacts
from shared.contracts.order import guest_token_matches

MAX_TOKEN_LENGTH = 64
# Solidus's `requires_authentication`: off by default, so guests check out with the order token.
REQUIRE_API_KEY = os.environ.get("SOLIDUS_REQUIRE_API_KEY", "false").lower() in ("1", "true", "yes")


def admin_key() -> str:
    return os.environ.get("TILLSTREAM_ADMIN_KEY", "")


def _bearer(request: Request) -> str | None:
    """The API key, from the Authorization header only. Solidus also reads `?token=`, but a key
    in a URL ends up in access logs, proxies and browser history: such a request is refused."""
    if "token" in request.query_params:
        raise ApiError(401, {"error": "API keys are accepted only in the Authorization header."})
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def order_token(request: Request, body: dict[str, Any] | None = None) -> str | None:
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


async def authorize(request: Request, number: str, *, body: dict | None = None) -> dict:
    """The order view, if the caller may see it (admin key, or the order's own token): for a
    route that needs what changes (state, totals, lines, payments) or renders the order."""
    admin = is_admin(request)
    token = order_token(request, body)
    return _allowed(request, await fetch_order(request, number), admin=admin, token=token)


async def authorize_access(request: Request, number: str, *, body: dict | None = None) -> AccessFacts:
    """The order's access facts (number, dialect, guest token digest, currency), if the caller
    may see it, judged as `authorize` judges: for a route that needs nothing that changes.
    They are fixed at the order's creation, so the gateway keeps them (order_access.py): a
    route authorised again reads nothing."""
    admin = is_admin(request)
    token = order_token(request, body)
    return _allowed(request, await access_facts(request, number), admin=admin, token=token)


Order = TypeVar("Order", bound=Mapping[str, Any])


def _allowed(request: Request, order: Order | None, *, admin: bool, token: str | None) -> Order:
    if admin:
        if order is None:
            raise ApiError(404, NOT_FOUND)
        return order
    if order is not None and not is_solidus_order(order):
        order = None  # another dialect's order is unknown here: answered as any unknown one is
    # A token for an unknown order is refused like a wrong token, as Solidus does (so the
    # answer tells nothing of which numbers exist, in either dialect).
    if order is None or not guest_token_matches(token, order["guest_token_digest"]):
        raise ApiError(401, UNAUTHORIZED)
    request.state.guest_token = token  # shown back in the answer (guest_token_shown)
    return order


def is_solidus_order(order: Mapping[str, Any]) -> bool:
    """Created through these routes, or before orders recorded their dialect."""
    return order.get("dialect") in (None, "solidus")


def guest_token_shown(request: Request, order: dict, body: dict | None = None) -> str | None:
    """The `token` an order answer shows: the guest's own, when the caller presented it (the
    service keeps only its digest, so an admin without it sees none)."""
    token = getattr(request.state, "guest_token", None) or order_token(request, body)
    return token if guest_token_matches(token, order.get("guest_token_digest")) else None


def guest_token_for_owner(request: Request, body: dict) -> str | None:
    """The guest's token, for a step the order service may authorise by itself (sparing a
    read of the order): none for an admin, for a caller without a token, and when the step
    needs the order first."""
    if is_admin(request) or body.get("expected_total") is not None:
        return None
    token = order_token(request, body) or None
    request.state.guest_token = token  # shown back if the order service accepts it (guest_token_shown)
    return token


def require_admin(request: Request) -> None:
    if not is_admin(request):
        raise ApiError(401, UNAUTHORIZED)
