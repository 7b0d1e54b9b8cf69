"""The order service: its definition (with the completion saga's participants, its consumer
and its sweep), hosted with the others (tillstream/host.py) or alone
(`uvicorn --factory services.order.app:create_app`)."""
from pathlib import Path

import shared.contracts  # noqa: F401
from services.cart.api import CartService
from services.order.api import OrderService
from services.order.consumers import run_expired_steps, run_unpaid_releases, subscriptions
from services.order.context import build
from services.order.operations import OrderOperations
from services.payment.api import PaymentService
from services.shipping.api import ShippingService
from shared.kafka import SAGA_TOPIC
from shared.service import ServiceDefinition, create_service

definition = ServiceDefinition(name="order", interface=OrderService, operations=OrderOperations,
                               peers={"cart": CartService, "shipping": ShippingService, "payment": PaymentService},
                               build=build,
                               migrations=Path(__file__).parent / "migrations",
                               subscriptions=subscriptions, tasks=[run_expired_steps, run_unpaid_releases],
                               # Kept creatable: the retired saga commands' history was published there.
                               other_topics=(SAGA_TOPIC,))


def create_app():
    return create_service(definition)
