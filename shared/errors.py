"""The one shape in which a service refuses a command; each dialect renders it its way."""
from __future__ import annotations

# The refusals of an order that is completing or placed, whichever service owns the change
# (each dialect renders them as its own "locked" or "already placed" error).
LOCKED_CODES = ("order_locked", "order_placed", "cart_locked", "shipments_locked")


class DomainError(Exception):
    """A business rule refused the command. `code` is stable; `message` is for people."""

    def __init__(self, code: str, message: str = "", *, status: int = 422, **details: object) -> None:
        super().__init__(message or code)
        self.code = code
        self.status = status
        self.message = message or code
        self.details = details


def not_found(what: str) -> DomainError:
    return DomainError("not_found", f"{what} not found", status=404)
