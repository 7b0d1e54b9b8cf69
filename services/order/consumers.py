"""Handlers of the order service for other services' events."""
