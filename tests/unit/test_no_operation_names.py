"""The gateway and the completion saga call the services' operations as typed methods, never
by name (#25): no string literal naming an operation is passed to a call, no `getattr` picks
one, and a static reading from the Solidus checkout reaches the order service's interface in
one import."""
from __future__ import annotations

import ast
from pathlib import Path

from services.cart.api import CartService
from services.order.api import OrderService
from services.payment.api import PaymentService
from services.shipping.api import ShippingService
from shared.rpc import operations

ROOT = Path(__file__).resolve().parents[2]
NAMES = {name for protocol in (CartService, OrderService, ShippingService, PaymentService)
         for name in operations(protocol)}
CHECKED = sorted([*(ROOT / "services" / "gateway").rglob("*.py"), ROOT / "services" / "order" / "saga.py"])


def _arguments(call: ast.Call):
    yield from call.args
    yield from (keyword.value for keyword in call.keywords)


def _literal_texts(node: ast.AST):
    """The string literals an argument is made of (a plain one, or an f-string's parts)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr):
        yield from (v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))


def violations(source: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source.read_text())):
        if not isinstance(node, ast.Call):
            continue
        where = f"{source.relative_to(ROOT)}:{node.lineno}"
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") and len(node.args) > 1:
            attribute = node.args[1]  # by a name computed at run time, or by an operation's
            if not (isinstance(attribute, ast.Constant) and isinstance(attribute.value, str)) \
                    or attribute.value in NAMES:
                found.append(f"{where}: {node.func.id}(...)")
        for argument in _arguments(node):
            for text in _literal_texts(argument):
                if text in NAMES or (isinstance(argument, ast.JoinedStr)
                                     and any(name.endswith(text) or name.startswith(text)
                                             for name in NAMES if text.strip("_") and len(text) > 3)):
                    found.append(f"{where}: {text!r}")
    return found


def test_the_checker_finds_an_operation_named_in_a_call(tmp_path):
    sample = ROOT / "services" / "gateway" / "_sample_for_the_checker.py"
    try:
        sample.write_text('async def f(request, action):\n'
                          '    await call(request, "order", "complete", number="R1")\n'
                          '    await getattr(services(request).payment, f"{action}_payment")(number="R1")\n'
                          '    getattr(request.state, "guest_token", None)\n'
                          '    await getattr(services(request).order, "cancel")("R1")\n')
        found = violations(sample)
    finally:
        sample.unlink()
    # "complete"; the getattr by a computed name and its f-string; the getattr of "cancel"
    # (twice: the getattr and its literal). Not the getattr of an attribute that is no operation.
    assert len(found) == 5, found


def test_no_operation_names_as_strings_in_the_gateway_and_the_saga():
    assert NAMES and CHECKED
    found = [v for source in CHECKED for v in violations(source)]
    assert not found, "\n".join(found)


def test_the_solidus_checkout_reaches_the_order_interface_in_one_import():
    tree = ast.parse((ROOT / "services" / "gateway" / "solidus" / "checkout.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "services.order.api" in imported
