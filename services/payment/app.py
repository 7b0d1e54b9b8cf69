"""The payment service: its definition (with the payment gateway `TILLSTREAM_PAYMENT_GATEWAY`
names; only the test one exists so far), hosted with the others
(tillstream/host.py) or alone (`uvicorn --factory services.payment.app:create_app`)."""
from pathlib import Path

import shared.contracts  # noqa: F401
from services.payment.api import PaymentService
from services.payment.consumers import subscriptions, use_gateway
from services.payment.gateway import BogusGateway
from services.payment.operations import PaymentOperations
from shared import safety
from shared.service import ServiceContext, ServiceDefinition, create_service


def connect_gateway(ctx: ServiceContext) -> None:
    # The only gateway so far is the test one, which shared/safety.py allows in development only.
    if safety.check_payment_gateway(ctx.settings) == safety.TEST_PAYMENT_GATEWAY:
        ctx.extras["gateway"] = BogusGateway(ctx.pool)
    use_gateway(ctx.extras["gateway"])


definition = ServiceDefinition(name="payment", interface=PaymentService, operations=PaymentOperations,
                               migrations=Path(__file__).parent / "migrations",
                               subscriptions=subscriptions, on_start=connect_gateway,
                               check_settings=safety.check_payment_gateway)


def create_app():
    return create_service(definition)
