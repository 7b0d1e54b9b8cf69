"""#25 (S0.2): a service's state is built from its context when it starts, never at import.
Importing any module of the services creates no event store, repository, saga runner, view
watcher or payment gateway: one held by a module would be shared by every runtime of the
service in the process (and built before the settings it needs are known)."""
from __future__ import annotations

import importlib

import pytest

from services.order.view_watcher import ViewWatcher
from services.payment.gateway import BogusGateway
from shared.aggregate import Repository
from shared.eventstore import EventStore
from shared.saga_runner import SagaRunner

STATEFUL = (EventStore, Repository, SagaRunner, ViewWatcher, BogusGateway)
MODULES = [f"services.{service}.{module}" for service in ("cart", "shipping", "payment", "order")
           for module in ("app", "api", "commands", "consumers", "context", "domain", "operations")]
MODULES += [f"services.order.{module}" for module in ("saga", "view_watcher", "processing", "delivery")]
MODULES += ["tillstream.host"]


def _held(value: object) -> list[object]:
    """`value` and what a module-level list, tuple, dict or definition holds directly."""
    inner: list[object] = []
    if isinstance(value, (list, tuple, set)):
        inner = list(value)
    elif isinstance(value, dict):
        inner = [*value.keys(), *value.values()]
    elif hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        inner = [getattr(value, name) for name in value.__dataclass_fields__]
    return [value, *inner]


@pytest.mark.parametrize("name", MODULES)
def test_importing_a_service_module_builds_no_state(name):
    module = importlib.import_module(name)
    found = [(attribute, type(held).__name__) for attribute, value in vars(module).items()
             for held in _held(value) if isinstance(held, STATEFUL)]
    assert found == [], f"{name} holds state built at import: {found}"
