"""The payment service: its definition (with the payment gateway `TILLSTREAM_PAYMENT_GATEWAY`
names; only the test one exists so far), hosted with the others
(tillstream/host.py) or alone (`uvicorn --factory services.payment.app:create_app`)."""
from pathlib import Path

import shared.contracts  # noqa: F401
from services.payment.api import PaymentService
from services.payment.consumers import subscriptions
from services.payment.context import build
from services.payment.operations import PaymentOperations
from shared import safety
from shared.service import ServiceDefinition, create_service

definition = ServiceDefinition(name="payment", interface=PaymentService, operations=PaymentOperations,
                               migrations=Path(__file__).parent / "migrations",
                               subscriptions=subscriptions, build=build,
                               check_settings=safety.check_payment_gateway)


def create_app():
    return create_service(definition)
