"""examples/checkout.py, the walk-through a newcomer runs against `make run`, goes through both
dialects' checkouts as the README describes them (each status as the README says)."""
from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_the_example_checkouts_go_through_both_dialects(system):
    result = subprocess.run([sys.executable, "-m", "examples.checkout", "--gateway", system.gateway_url], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    solidus = out[out.index("== Solidus"):out.index("== GetCandy")]
    assert len(re.findall(r"^\s*\d+\. ", solidus, re.M)) == 11  # the README's eleven requests
    assert '"state": "complete"' in solidus and '"status": "payment-processing"' in out
    assert "both checkouts went through" in out
    # What opens an order is shortened, never printed whole.
    tokens = re.findall(r'"token":\s*"([^"]+)"', out)
    assert not tokens and not re.search(r"/api/v1/orders/[a-z0-9]{20,}", out)
