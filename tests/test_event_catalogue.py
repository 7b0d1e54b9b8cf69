"""The committed event catalogue (docs/events/) matches the contract models."""
from __future__ import annotations

import json

import yaml

from shared.contracts.order import SAGA_COMMANDS
from shared.envelope import EVENT_TYPES
from tillstream import catalog


def test_committed_catalogue_is_current():
    expected = catalog.render()
    committed = {p.name: p.read_text() for p in catalog.CATALOG_DIR.iterdir()}
    stale = sorted(name for name in expected.keys() | committed.keys()
                   if expected.get(name) != committed.get(name))
    assert not stale, f"docs/events is stale ({stale[:5]}...): run `python -m tillstream.catalog`"


def test_every_event_has_a_schema_and_an_asyncapi_message():
    spec = yaml.safe_load((catalog.CATALOG_DIR / "asyncapi.yaml").read_text())
    assert spec["asyncapi"].startswith("3.")
    messages = spec["components"]["messages"]
    contract = [cls for classes in catalog.events_by_service().values() for cls in classes]
    assert len(contract) == sum(1 for (t, _) in EVENT_TYPES if t.split(".")[0] in catalog.SERVICES) >= 30
    for cls in contract:
        name = f"{cls.event_type}.v{cls.event_version}"
        schema = json.loads((catalog.CATALOG_DIR / f"{name}.json").read_text())
        assert schema["properties"]["type"] == {"const": cls.event_type}
        # A retired contract keeps its schema (stored history decodes) but is no channel's message.
        assert (name in messages) is not cls.retired
        assert cls.retired or "traceparent" in messages[name]["headers"]["properties"]
    assert {c["address"] for c in spec["channels"].values()} == {
        "cart.events", "order.events", "shipping.events", "payment.events"}
    # The saga's commands are retired (the saga calls its participants): listed apart.
    commands = {catalog.contract_name(command) for command in SAGA_COMMANDS}
    assert all(command.retired for command in SAGA_COMMANDS)
    assert not commands & set(messages)
    retired = (catalog.CATALOG_DIR / "README.md").read_text().split("## Retired")[1]
    assert all(f"`{name}`" in retired for name in commands)


def test_money_is_a_decimal_string_in_the_contract():
    schema = json.loads((catalog.CATALOG_DIR / "order.OrderCompleted.v1.json").read_text())
    total = schema["properties"]["payload"]["properties"]["total"]
    assert total.get("type") == "string" or any(alt.get("type") == "string" for alt in total.get("anyOf", []))
