"""The payment service process: `uvicorn services.payment.app:app`."""
from pathlib import Path

import shared.contracts  # noqa: F401
from shared.service import ServiceDefinition, create_service
from services.payment.api import router
from services.payment.consumers import subscriptions, use_gateway
from services.payment.gateway import BogusGateway

definition = ServiceDefinition(name="payment", router=router, migrations=Path(__file__).parent / "migrations",
                               subscriptions=subscriptions,
                               on_start=lambda app: use_gateway(BogusGateway(app.state.pool)))
app = create_service(definition)
