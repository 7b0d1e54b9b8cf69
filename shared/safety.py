"""What a process refuses to start with: settings that are fine for a developer's machine or
a chaos test and unsafe anywhere else. A refusal is one line on stderr and a non-zero exit
(`SystemExit`), before anything listens or connects.

- The payment gateway is required (`TILLSTREAM_PAYMENT_GATEWAY`); the test gateway, which
  authorises card "1", only with `TILLSTREAM_DEVELOPMENT=true` (`make run` and the tests).
- Fault injection (shared/faults.py) only with `TILLSTREAM_CHAOS=true`, announced in the log.
- Keys and secrets of at least 32 characters, outside development.
- `TILLSTREAM_SERVICE_KEY`, the one key that opened every operation, is gone: its holders now
  need `TILLSTREAM_GATEWAY_KEY` or `TILLSTREAM_OPERATOR_KEY` (shared/service_access.py).
"""
from __future__ import annotations

import logging
import os

from shared.service_access import MIN_KEY_LENGTH
from shared.settings import Settings

log = logging.getLogger(__name__)

FAULT_VARIABLES = ("TILLSTREAM_CRASH_AT", "TILLSTREAM_CRASH_MARKER_DIR", "TILLSTREAM_DROP_AT", "TILLSTREAM_FAIL_AT",
                   "TILLSTREAM_HOLD_AT", "TILLSTREAM_FAULTS_DIR")
TEST_PAYMENT_GATEWAY = "test"
PAYMENT_GATEWAYS = (TEST_PAYMENT_GATEWAY,)
SECRET_VARIABLES = ("TILLSTREAM_ADMIN_KEY", "TILLSTREAM_ID_SECRET", "TILLSTREAM_GATEWAY_KEY", "TILLSTREAM_OPERATOR_KEY",
                    "TILLSTREAM_ORDER_KEY")
CALLER_KEYS = ("TILLSTREAM_GATEWAY_KEY", "TILLSTREAM_OPERATOR_KEY", "TILLSTREAM_ORDER_KEY")


def refuse(reason: str) -> None:
    raise SystemExit(f"tillstream: refusing to start: {reason}")


def check_process(settings: Settings) -> None:
    """Every Tillstream process, at start-up."""
    if os.environ.get("TILLSTREAM_SERVICE_KEY"):
        refuse("TILLSTREAM_SERVICE_KEY is no longer read: set TILLSTREAM_GATEWAY_KEY (the gateway's calls) and"
               " TILLSTREAM_OPERATOR_KEY (reference-data loaders) instead")
    armed = [name for name in FAULT_VARIABLES if os.environ.get(name)]
    if armed and not settings.chaos:
        refuse(f"{', '.join(armed)} set without TILLSTREAM_CHAOS=true (fault injection is for chaos tests only)")
    if settings.chaos:
        log.warning("fault injection is enabled (TILLSTREAM_CHAOS): never in production",
                    extra={"fields": {"armed_by": armed}})
    keys = [(name, os.environ.get(name)) for name in CALLER_KEYS]
    for i, (name, key) in enumerate(keys):
        for other, other_key in keys[i + 1:]:
            if key and key == other_key:
                refuse(f"{name} and {other} are the same key: each caller needs its own")
    if not settings.development:
        for name in SECRET_VARIABLES:
            if 0 < len(os.environ.get(name, "")) < MIN_KEY_LENGTH:
                refuse(f"{name} is shorter than {MIN_KEY_LENGTH} characters")


def check_payment_gateway(settings: Settings) -> str:
    """The payment gateway this process may use (the payment service's processes)."""
    chosen = settings.payment_gateway
    if not chosen:
        refuse("TILLSTREAM_PAYMENT_GATEWAY is not set (the test gateway needs TILLSTREAM_DEVELOPMENT=true as well)")
    if chosen not in PAYMENT_GATEWAYS:
        refuse(f"TILLSTREAM_PAYMENT_GATEWAY={chosen!r} is not a known gateway ({', '.join(PAYMENT_GATEWAYS)})")
    if chosen == TEST_PAYMENT_GATEWAY and not settings.development:
        refuse("TILLSTREAM_PAYMENT_GATEWAY=test authorises any card '1'; it needs TILLSTREAM_DEVELOPMENT=true")
    return chosen
