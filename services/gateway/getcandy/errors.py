"""GetCandy's error bodies (getcandy-api.md §1): validation as a flat field map (422),
controller errors as `{"error":{"http_code","message"}}`."""
from __future__ import annotations

from shared.errors import LOCKED_CODES, DomainError

BASKET_PLACED = "This basket already has an order that has been placed"
ALREADY_PROCESSED = "This order has already been processed"
ORDER_PLACED = "This order has already been placed"
BEING_PROCESSED = "The order is being processed; please try again shortly."
COUPON_INVALID = {"coupon": ["The coupon is either invalid, expired or cannot be used"]}


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


def refused_while_locked(refusal: DomainError, order: dict | None, *,
                         placed_message: str = ORDER_PLACED) -> GetCandyError | None:
    """A change refused because the order is placed (403) or being processed (409); None
    for any other refusal."""
    if refusal.code not in LOCKED_CODES:
        return None
    if refusal.code == "order_placed" or (order and order.get("completed_at")):
        return error(403, placed_message)
    return error(409, BEING_PROCESSED)


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
