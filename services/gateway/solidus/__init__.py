"""The Solidus-style checkout API (`/api/...`): routes, auth and JSON shapes of solidus_api
(../shared/research/solidus-api.md). Each route reads the request, authorises the caller,
calls the owning service's operation, and renders the answer in Solidus's shape."""
from fastapi import APIRouter

from services.gateway.solidus import catalog, checkout, line_items, orders, payments, shipments

router = APIRouter(prefix="/api")
for module in (orders, line_items, checkout, shipments, payments, catalog):
    router.include_router(module.router)
