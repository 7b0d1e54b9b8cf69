"""Solidus's error bodies (research §3), and how a service's refusal becomes one."""
from __future__ import annotations

from typing import Any

from shared.errors import LOCKED_CODES, DomainError

NOT_FOUND = {"error": "The resource you were looking for could not be found."}
UNAUTHORIZED = {"error": "You are not authorized to perform that action."}
INVALID_RESOURCE = "Invalid resource. Please fix errors and try again."
PLACED = "The order has been placed and can no longer be changed."


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


def bad_request(message: str) -> ApiError:
    return ApiError(400, {"error": message})


def refused_while_locked(number: str, code: str, *, placed: bool, admin: bool) -> ApiError:
    """A placed order is not the guest's to update any more (CanCan: 401; an admin gets
    invalid_resource); a completing one holds the order lock (OrderMutex: 409, plain text)."""
    if placed or code == "order_placed":
        return invalid_resource({"base": [PLACED]}) if admin else ApiError(401, UNAUTHORIZED)
    return ApiError(409, f"Could not obtain lock on order {number}")


def from_refusal(refusal: DomainError, number: str, *, placed: bool, admin: bool) -> ApiError:
    """A service's refusal as Solidus answers it."""
    errors = refusal.details.get("errors", {})
    match refusal.code:
        case code if code in LOCKED_CODES:
            return refused_while_locked(number, code, placed=placed, admin=admin)
        case "unauthorized":
            return ApiError(401, UNAUTHORIZED)
        case "could_not_transition":
            return could_not_transition(errors)
        case "invalid_resource":
            return invalid_resource(errors)
        case _ if refusal.status == 404:
            return ApiError(404, NOT_FOUND)
        case _:
            return invalid_resource({refusal.details.get("field", "base"): [refusal.message]})


def completion_refused(refusal: dict) -> ApiError:
    """The completion saga's failure (services/order/saga.py) as Solidus answers it."""
    match refusal["code"]:
        case "insufficient_stock":
            return insufficient_stock()
        case "promotions_ineligible" | "cart_changed" | "variants_discarded" | "shipments_outdated":
            # The checkout restarted at `address`, as Solidus's complete does when promotions
            # change or a variant was discarded.
            return could_not_transition({"base": [refusal["message"]]})
        case _:
            return invalid_resource({"base": [refusal["message"]]})
