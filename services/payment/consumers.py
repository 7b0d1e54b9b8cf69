"""Handlers of the payment service for other services' events."""
from __future__ import annotations

from shared.bus import events_topic
from shared.order_directory import track_orders
from shared.service import Subscription

subscriptions = [Subscription(name="orders", topics=[events_topic("order")], handler=track_orders)]
