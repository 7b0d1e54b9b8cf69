"""The order service's public interface: `OrderService`, the operations the gateway (and the
demo's loaders) call, with their arguments and answers.

The interface only: the implementation is services/order/operations.py (`OrderOperations`),
reached in-process or over HTTP through shared/rpc.py, whose two ways give the same answers:
JSON values, money as decimal strings. A command answers with the events it caused and, with
`view_wait_ms`, the order view once what the command awaits (a delivery, a completion) has
settled: one call instead of two. `guest_token` on `advance` and `complete`: the caller is a
guest with that order token, and the Order refuses the step unless the token is its own.
A refusal is a `shared.errors.DomainError` (code, message, status, details).
"""
from __future__ import annotations

from typing import Any, Literal, NotRequired, Protocol, Sequence, TypedDict

# How long a read or a step waits for the view to apply the events it names, unless told.
DEFAULT_VIEW_WAIT_MS = 3000

OrderView = dict[str, Any]  # services/order/view.py:read_order's answer, as JSON


class Outcome(TypedDict):
    """A command's answer: its events, the request it awaits, and with `view_wait_ms` the view."""
    events: list[str]
    awaiting: str | None
    order: NotRequired[OrderView | None]
    view_stale: NotRequired[bool]


class Created(Outcome):
    number: str
    token: str


class Advanced(Outcome):
    state: str


class Found(TypedDict):
    order: OrderView
    stale: bool


class AccessFacts(TypedDict):
    """What an order is given at its creation and keeps for its life (no later event changes
    it, services/order/domain.py): enough to tell who may act on it, so a caller may keep it."""
    number: str
    dialect: str | None  # the public dialect that created it (None: before dialects were recorded)
    guest_token_digest: str  # SHA-256 of the guest token, hex: the token itself is kept nowhere
    currency: str


class CaughtUp(TypedDict):
    caught_up: bool


class State(TypedDict):
    id: int
    country_id: int
    name: str
    abbr: str


class Country(TypedDict):
    id: int
    iso: str
    iso3: str
    iso_name: str
    name: str
    numcode: int
    states_required: bool
    states: list[State]


class TaxRatesLoaded(TypedDict):
    tax_rates: int


class CountriesLoaded(TypedDict):
    countries: int


# Which step of `process` refused (a refusal's `details["stage"]`): the payment type chosen,
# the order's own guards, a checkout step, the delivery's answer, the payment, the completion.
ProcessStage = Literal["payment_type", "processable", "checkout", "delivery", "payment", "completion"]


class OrderService(Protocol):
    async def create_order(self, *, currency: str = "USD", email: str | None = None, user_id: int | None = None,
                           dialect: str | None = None, view_wait_ms: int | None = None) -> Created: ...

    async def update_details(self, number: str, *, email: str | None = None, bill_address: Any = None,
                             ship_address: Any = None, use_billing: bool = False, require_phone: bool = True,
                             view_wait_ms: int | None = None) -> Outcome: ...

    async def update_contact(self, number: str, *, email: str | None = None, phone: str | None = None,
                             view_wait_ms: int | None = None) -> Outcome: ...

    async def update_and_advance(self, number: str, *, email: str | None = None, bill_address: Any = None,
                                 ship_address: Any = None, use_billing: bool = False, view_wait_ms: int | None = None
                                 ) -> Advanced:
        """`update_details`, then one step (`advance`) on the view the update left (Solidus's
        checkout update): the update stands even if the step is refused."""
        ...

    async def advance(self, number: str, *, require_email: bool = True, view_wait_ms: int | None = None,
                      after: Sequence[str] = (), guest_token: str | None = None) -> Advanced:
        """One checkout step. `after`: other services' events the step depends on (a payment
        just made, say); it waits (bounded) until the view has them, as a read would."""
        ...

    async def complete(self, number: str, *, view_wait_ms: int | None = None,
                       guest_token: str | None = None) -> Outcome: ...

    async def cancel(self, number: str, *, view_wait_ms: int | None = None) -> Outcome: ...

    async def get_order(self, number: str, *, after: Sequence[str] = (),
                        timeout_ms: int = DEFAULT_VIEW_WAIT_MS) -> Found:
        """The order view; with `after` (event ids), once the view has applied those events
        (waiting at most `timeout_ms`; `stale` says the wait ran out). No such order: 404."""
        ...

    async def access_facts(self, number: str) -> AccessFacts:
        """The order's facts fixed at its creation (one narrow row, not the view with its
        lines): the gateway keeps them to authorise a caller without reading the order again.
        No such order (yet): 404."""
        ...

    async def wait_applied(self, number: str, *, after: Sequence[str] = (),
                           timeout_ms: int = DEFAULT_VIEW_WAIT_MS) -> CaughtUp:
        """Read-your-writes without reading the order: answers once the view has applied the
        events in `after` (`caught_up: false` when `timeout_ms` ran out)."""
        ...

    async def countries(self) -> list[Country]: ...

    # -- reference data (demo data, imports): admin operations, idempotent upserts ----------
    async def load_tax_rates(self, *, rates: list[dict[str, Any]]) -> TaxRatesLoaded:
        """Upserts `{currency, rate}` rows."""
        ...

    async def load_countries(self, *, countries: list[dict[str, Any]]) -> CountriesLoaded:
        """Upserts countries with their states."""
        ...

    async def process(self, number: str, *, payment_method_id: int | None = None, payment_handle: str | None = None,
                      payment_token: str | None = None, view_wait_ms: int | None = None,
                      step_wait_ms: int = DEFAULT_VIEW_WAIT_MS) -> Outcome:
        """GetCandy's `process`, whole (services/order/processing.py): refused when placed
        (`order_placed`) or without a full billing address (403); the checkout steps up to
        payment (each waiting up to `step_wait_ms` for its view); the payment with the gateway
        method `payment_method_id` (unknown: 404) or `payment_handle` and `payment_token`, else
        the offline method; then `complete`, answered as `complete` answers. A refusal names
        its step in `details["stage"]` (ProcessStage)."""
        ...
