"""The README's sequence diagram is the saga definition's own (`COMPLETION.mermaid()`), and
the definition is the only place the completion's steps are listed."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from services.order.saga import COMPLETION

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_shows_the_saga_as_defined():
    readme = (ROOT / "README.md").read_text()
    diagrams = re.findall(r"```mermaid\n(.*?)```", readme, re.S)
    assert COMPLETION.mermaid() + "\n" in diagrams, "README's saga diagram is stale: paste COMPLETION.mermaid()"


def test_no_service_lists_the_steps_of_its_own():
    """The steps' commands are built in the definition alone; every service (the order
    service's other modules, the participants, the gateway) only answers them, matching
    them as patterns (`case o.CartLockRequested() as request:`) but never calling them."""
    commands = {step.command.__name__ for step in COMPLETION.steps if step.command}
    commands |= {step.compensation.__name__ for step in COMPLETION.steps if step.compensation}
    definition = ROOT / "services" / "order" / "saga.py"
    modules = [path for path in sorted((ROOT / "services").rglob("*.py")) if path != definition]
    assert {path.relative_to(ROOT / "services").parts[0] for path in modules} >= {
        "cart", "order", "shipping", "payment", "gateway"}
    for path in modules:
        built = sorted(name for name in called_names(path) if name in commands)
        assert not built, f"{path.relative_to(ROOT)} builds saga commands itself: {built}"


def called_names(path: Path) -> set[str]:
    """The names of whatever `path` calls (`f(...)`, `module.f(...)`)."""
    calls = (node.func for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call))
    return {call.id if isinstance(call, ast.Name) else call.attr for call in calls
            if isinstance(call, (ast.Name, ast.Attribute))}
