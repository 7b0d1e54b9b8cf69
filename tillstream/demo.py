"""Demo data for `make run`: loaded through the services' own APIs, idempotently."""
from __future__ import annotations

from tillstream.system import System


def load_demo_data(system: System) -> list[str]:
    return []
