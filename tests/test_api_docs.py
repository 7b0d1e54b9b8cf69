"""The API documentation works anywhere: /docs and /redoc render in a real browser with the
network cut (every host but the gateway's unresolvable), from assets the gateway serves."""
from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections import Counter

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rendered(url: str) -> str:
    """The DOM after the page's scripts ran, in headless Chromium that can reach 127.0.0.1 alone."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=15000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (make test installs Debian's where it can)")
async def test_swagger_ui_and_redoc_render_offline(system, gateway):
    page = (await gateway.get("/docs")).text
    assert not re.search(r"""(src|href)=["']?https?://""", page), "the page loads something from the network"
    swagger = await asyncio.to_thread(rendered, f"{system.gateway_url}/docs")
    # Swagger UI drew the operations, grouped by the dialects' tags.
    assert swagger.count('class="opblock-tag"') >= 7, swagger[:2000]
    assert "Solidus: Complete" in swagger and "GetCandy: Process" in swagger
    redoc = await asyncio.to_thread(rendered, f"{system.gateway_url}/redoc")
    assert "GetCandy: Create Order" in redoc and "Solidus: Create Order" in redoc, redoc[:2000]


async def test_the_document_tags_each_dialect_names_each_operation_once_and_declares_its_security(gateway):
    document = (await gateway.get("/openapi.json")).json()
    operations = [(path, method, operation) for path, methods in document["paths"].items()
                  for method, operation in methods.items()]
    tags = {tag["name"] for tag in document["tags"]}
    for path, _, operation in operations:
        assert len(operation["tags"]) == 1 and operation["tags"][0] in tags
        dialect = operation["tags"][0].split(":")[0]
        expected = ("GetCandy" if path.startswith("/api/v1/") else "Solidus" if path.startswith("/api/")
                    else "Operations")
        assert dialect == expected, (path, operation["tags"])
    summaries = Counter(operation["summary"] for _, _, operation in operations)
    assert [s for s, n in summaries.items() if n > 1] == []
    schemes = document["components"]["securitySchemes"]
    assert schemes["adminKey"] == {**schemes["adminKey"], "type": "http", "scheme": "bearer"}
    assert schemes["orderToken"]["in"] == "header" and schemes["orderToken"]["name"] == "X-Spree-Order-Token"
    complete = document["paths"]["/api/checkouts/{number}/complete"]["put"]
    assert {"orderToken": []} in complete["security"] and {"adminKey": []} in complete["security"]
