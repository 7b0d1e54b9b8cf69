"""The shipping service process: `uvicorn services.shipping.app:app`."""
from pathlib import Path

import shared.contracts  # noqa: F401
from shared.service import ServiceDefinition, create_service
from services.shipping.api import router
from services.shipping.consumers import subscriptions

definition = ServiceDefinition(name="shipping", router=router, migrations=Path(__file__).parent / "migrations",
                               subscriptions=subscriptions)
app = create_service(definition)
