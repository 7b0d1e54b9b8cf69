"""The public event contract: every event type any service publishes.

Subscribers import these models (and nothing from `services/`) to read the topics
`cart.events`, `order.events`, `shipping.events` and `payment.events` (each service's own
events); `order.saga` held the completion saga's commands, now retired (still decoded). A model's
`event_type` and `event_version` form its stable name, e.g. `order.OrderCreated.v1`.
"""
from shared.contracts import cart, order, payment, shipping  # noqa: F401  (importing registers the event types)

# The services, each with its schema, its topic `<service>.events` and its contract module.
SERVICES = ("cart", "order", "shipping", "payment")
