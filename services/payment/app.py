"""The payment service process: `uvicorn services.payment.app:app`."""
from pathlib import Path

import shared.contracts  # noqa: F401
from shared.service import ServiceDefinition, create_service
from services.payment.api import router
from services.payment.consumers import subscriptions

definition = ServiceDefinition(name="payment", router=router, migrations=Path(__file__).parent / "migrations",
                               subscriptions=subscriptions)
app = create_service(definition)
