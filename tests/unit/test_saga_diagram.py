"""The README's sequence diagram is the saga definition's own (`COMPLETION.mermaid()`), and
the definition is the only place the completion's steps are listed."""
from __future__ import annotations

import re
from pathlib import Path

from services.order.saga import COMPLETION

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_shows_the_saga_as_defined():
    readme = (ROOT / "README.md").read_text()
    diagrams = re.findall(r"```mermaid\n(.*?)```", readme, re.S)
    assert COMPLETION.mermaid() + "\n" in diagrams, "README's saga diagram is stale: paste COMPLETION.mermaid()"


def test_no_service_lists_the_steps_of_its_own():
    """The steps' commands are named in the definition; services only answer them."""
    commands = {step.command.__name__ for step in COMPLETION.steps if step.command}
    commands |= {step.compensation.__name__ for step in COMPLETION.steps if step.compensation}
    for path in (ROOT / "services" / "order").glob("*.py"):
        if path.name in ("saga.py", "domain.py"):
            continue
        text = path.read_text()
        assert not any(f"{name}(" in text for name in commands), f"{path.name} builds a saga command itself"
