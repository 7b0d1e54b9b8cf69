"""The services as the gateway calls them: one object per service interface
(services/<service>/api.py), in-process or over HTTP (shared/rpc.py), whichever hosts the
gateway chose (tillstream/host.py: `local`, services/gateway/app.py:create_app: `remote`).

A route calls `services(request).order.complete(number, guest_token=token)`: the reader, the
IDE and a static walk reach `OrderService.complete` in services/order/api.py from here.
"""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from services.cart.api import CartService
from services.order.api import OrderService
from services.payment.api import PaymentService
from services.shipping.api import ShippingService
from shared import rpc


@dataclass(frozen=True)
class Services:
    cart: CartService
    order: OrderService
    shipping: ShippingService
    payment: PaymentService

    async def close(self) -> None:
        """Closes the HTTP connections of the remote ones."""
        await rpc.close(self.cart, self.order, self.shipping, self.payment)


def services(request: Request) -> Services:
    return request.app.state.services
