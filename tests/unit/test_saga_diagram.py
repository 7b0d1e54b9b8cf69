"""The README's sequence diagram is the saga definition's own (`COMPLETION.mermaid()`), and
the definition is the only place the completion's steps are listed."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

from services.order.saga import COMPLETION

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_shows_the_saga_as_defined():
    readme = (ROOT / "README.md").read_text()
    diagrams = re.findall(r"```mermaid\n(.*?)```", readme, re.S)
    assert COMPLETION.mermaid() + "\n" in diagrams, "README's saga diagram is stale: paste COMPLETION.mermaid()"


def test_no_service_lists_the_steps_of_its_own():
    """The steps' operations are picked in the definition alone: no other module calls them
    (`peers.cart.lock_cart(...)`), save each participant's own implementation running its
    command (services/<participant>/operations.py calling commands.lock_cart)."""
    operations = {step.name for step in COMPLETION.steps if not step.local}
    operations |= {step.undo(SimpleNamespace(**COMPLETION.interfaces)).__name__
                   for step in COMPLETION.steps if step.undo}
    assert operations == {"lock_cart", "unlock_cart", "allocate_stock", "release_stock", "process_payments",
                          "void_payments"}
    definition = ROOT / "services" / "order" / "saga.py"
    modules = [path for path in sorted((ROOT / "services").rglob("*.py")) if path != definition]
    assert {path.relative_to(ROOT / "services").parts[0] for path in modules} >= {
        "cart", "order", "shipping", "payment", "gateway"}
    for path in modules:
        called = sorted(name for name in called_attributes(path) if name in operations)
        own = path.name == "operations.py" and path.parent.name in COMPLETION.participants
        assert not called or own, f"{path.relative_to(ROOT)} calls the saga's steps itself: {called}"


def called_attributes(path: Path) -> set[str]:
    """The names of whatever `path` calls as an attribute (`peers.cart.lock_cart(...)`)."""
    calls = (node.func for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call))
    return {call.attr for call in calls if isinstance(call, ast.Attribute)}
