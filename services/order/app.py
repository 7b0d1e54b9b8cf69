"""The order service process: `uvicorn services.order.app:app`."""
from pathlib import Path

import shared.contracts  # noqa: F401
from shared.service import ServiceDefinition, create_service
from services.order.api import router

definition = ServiceDefinition(name="order", router=router, migrations=Path(__file__).parent / "migrations")
app = create_service(definition)
