"""The GetCandy-style order lifecycle API (`/api/v1/...`), a second face on the same domain.

Baskets are the same carts and orders as the Solidus dialect's (a GetCandy basket and its
order are one Tillstream order, under two ids); `process` runs the same completion saga as
Solidus's `complete`. Shapes, statuses and errors follow ../shared/research/getcandy-api.md,
with its recommendations where the original crashed: 404 for unknown ids, billing details
required before processing, coupons kept when lines change.
"""
from fastapi import APIRouter

from services.gateway.getcandy import baskets, catalog, orders, payments

router = APIRouter(prefix="/api/v1")
for module in (baskets, orders, payments, catalog):
    router.include_router(module.router)
