"""The shipping service: its definition, hosted with the others (tillstream/host.py) or
alone (`uvicorn --factory services.shipping.app:create_app`)."""
from pathlib import Path

import shared.contracts  # noqa: F401
from services.shipping.api import ShippingService
from services.shipping.consumers import subscriptions
from services.shipping.context import build
from services.shipping.operations import ShippingOperations
from shared.service import ServiceDefinition, create_service

definition = ServiceDefinition(name="shipping", interface=ShippingService, operations=ShippingOperations, build=build,
                               migrations=Path(__file__).parent / "migrations",
                               subscriptions=subscriptions)


def create_app():
    return create_service(definition)
