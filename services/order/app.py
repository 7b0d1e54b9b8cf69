"""The order service process: `uvicorn services.order.app:app`."""
from pathlib import Path

import shared.contracts  # noqa: F401
from shared.service import ServiceDefinition, create_service
from services.order.api import router
from services.order.consumers import subscriptions

definition = ServiceDefinition(name="order", router=router, migrations=Path(__file__).parent / "migrations",
                               subscriptions=subscriptions)
app = create_service(definition)
