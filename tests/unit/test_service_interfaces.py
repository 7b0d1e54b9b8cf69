"""Each service's public interface (services/<service>/api.py, a Protocol) and its one
implementation (services/<service>/operations.py) agree, and the interface stands alone: a
caller that imports it loads nothing of the service behind it."""
from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest

from services.cart.api import CartService
from services.cart.operations import CartOperations
from services.order.api import OrderService
from services.order.operations import OrderOperations
from services.payment.api import PaymentService
from services.payment.operations import PaymentOperations
from services.shipping.api import ShippingService
from services.shipping.operations import ShippingOperations
from shared.rpc import operations

ROOT = Path(__file__).resolve().parents[2]
INTERFACES = {"cart": (CartService, CartOperations), "order": (OrderService, OrderOperations),
              "shipping": (ShippingService, ShippingOperations), "payment": (PaymentService, PaymentOperations)}


@pytest.mark.parametrize("service", INTERFACES)
def test_the_implementation_subclasses_its_protocol_with_identical_signatures(service):
    protocol, implementation = INTERFACES[service]
    assert protocol in implementation.__mro__[1:], f"{implementation.__name__} must subclass {protocol.__name__}"
    methods = operations(protocol)
    assert methods, protocol
    # Every public coroutine of the implementation is one of the Protocol's (nothing callable
    # that the interface does not declare) and every Protocol method is implemented here.
    implemented = {name for name, value in vars(implementation).items()
                   if not name.startswith("_") and inspect.iscoroutinefunction(value)}
    assert implemented == set(methods), (service, implemented ^ set(methods))
    for name in methods:
        declared = inspect.signature(getattr(protocol, name))
        actual = inspect.signature(getattr(implementation, name))
        assert actual == declared, f"{implementation.__name__}.{name}{actual} != {protocol.__name__}.{name}{declared}"
        parameters = list(declared.parameters.values())[1:]
        for position, parameter in enumerate(parameters):
            if parameter.name == "number":
                assert position == 0 and parameter.kind is parameter.POSITIONAL_OR_KEYWORD, (service, name)
            else:
                assert parameter.kind is parameter.KEYWORD_ONLY, (service, name, parameter.name)


@pytest.mark.parametrize("service", INTERFACES)
def test_the_interface_imports_nothing_of_its_service(service):
    """Only the standard library, typing, pydantic and shared/ (AST: no import is hidden)."""
    source = ROOT / "services" / service / "api.py"
    tree = ast.parse(source.read_text())
    assert ast.get_docstring(tree), f"{source}: say what the interface is"
    allowed = set(sys.stdlib_module_names) | {"__future__", "pydantic", "shared"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{source}: relative import"
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            assert module.split(".")[0] in allowed, f"{source} imports {module}"
