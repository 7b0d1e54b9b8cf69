"""The order service: the Order aggregate (checkout state machine), the order view, the saga."""
