"""The cart service: its definition, hosted with the others (tillstream/host.py) or alone
(`uvicorn --factory services.cart.app:create_app`)."""
from pathlib import Path

import shared.contracts  # noqa: F401
from services.cart.api import CartService
from services.cart.consumers import subscriptions
from services.cart.context import build
from services.cart.operations import CartOperations
from shared.service import ServiceDefinition, create_service

definition = ServiceDefinition(name="cart", interface=CartService, operations=CartOperations, build=build,
                               migrations=Path(__file__).parent / "migrations",
                               subscriptions=subscriptions)


def create_app():
    return create_service(definition)
