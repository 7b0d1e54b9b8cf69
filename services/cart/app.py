"""The cart service process: `uvicorn services.cart.app:app`."""
from pathlib import Path

import shared.contracts  # noqa: F401
from shared.service import ServiceDefinition, create_service
from services.cart.api import router
from services.cart.consumers import subscriptions

definition = ServiceDefinition(name="cart", router=router, migrations=Path(__file__).parent / "migrations",
                               subscriptions=subscriptions)
app = create_service(definition)
