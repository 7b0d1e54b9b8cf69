"""Published event schemas can evolve as the README promises, and only so.

Within a version a contract may gain optional fields: subscribers (ours and those validating
with the published schema) accept them. Every committed schema is checked against the form in
which it was first committed, so a change that would break a subscriber of that version (a
field removed or retyped, a new required field) fails here and needs a new version instead.
"""
from __future__ import annotations

import copy
import json
import subprocess
import uuid
from datetime import datetime, timezone

import jsonschema_rs
import pytest
from pydantic import ValidationError

import shared.contracts  # noqa: F401  (registers every event type)
from shared.envelope import EventEnvelope, decode_event, decode_event_json
from tillstream import catalog
from tillstream.compat import breaking_changes

ROOT = catalog.ROOT


def schema_of(name: str) -> dict:
    return json.loads((catalog.CATALOG_DIR / f"{name}.json").read_text())


def order_completed(**extra_payload) -> dict:
    return {
        "event_id": str(uuid.uuid4()), "type": "order.OrderCompleted", "version": 1, "aggregate_type": "Order",
        "aggregate_id": "R123456789", "sequence": 12, "occurred_at": datetime.now(timezone.utc).isoformat(),
        "correlation_id": "c-1", "causation_id": None,
        "payload": {"number": "R123456789", "request_id": "q-1", "total": "44.98", "payment_total": "44.98",
                    "payment_state": "paid", "shipment_state": "ready", "reference": None, **extra_payload},
        # A field of the envelope itself that a later release might add.
        **({"tenant": "eu-1"} if extra_payload else {}),
    }


def test_an_event_carrying_a_field_added_later_validates_against_its_published_schema():
    validator = jsonschema_rs.validator_for(schema_of("order.OrderCompleted.v1"))
    assert validator.is_valid(order_completed())
    assert validator.is_valid(order_completed(gift_message="Happy birthday"))
    # The schema still has teeth: a missing required field or a wrong type is refused.
    broken = order_completed()
    del broken["payload"]["total"]
    assert not validator.is_valid(broken)
    assert not validator.is_valid({**order_completed(), "sequence": "twelve"})


def test_our_own_readers_ignore_a_field_added_later_and_our_writers_may_not_invent_one():
    later = order_completed(gift_message="Happy birthday")
    event = decode_event(EventEnvelope.model_validate(later))
    assert type(event).__name__ == "OrderCompleted" and str(event.total) == "44.98"
    bulk = decode_event_json("order.OrderCompleted", 1, json.dumps(later["payload"]))
    assert bulk == event
    with pytest.raises(ValidationError):  # a misnamed field is an error where the event is made
        type(event)(**{**event.model_dump(), "refrence": "typo"})
    broken = dict(later["payload"], total="not money")
    with pytest.raises(ValidationError):  # what a reader ignores is only what it does not know
        decode_event_json("order.OrderCompleted", 1, json.dumps(broken))


def test_no_published_schema_forbids_added_fields():
    for path in catalog.CATALOG_DIR.glob("*.json"):
        assert '"additionalProperties": false' not in path.read_text(), path.name


def first_committed(relative: str) -> dict | None:
    """The schema as the commit that added it published it (None: not committed yet)."""
    added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", relative], cwd=ROOT,
                           capture_output=True, text=True)
    commits = added.stdout.split()
    if added.returncode != 0 or not commits:
        return None
    shown = subprocess.run(["git", "show", f"{commits[-1]}:{relative}"], cwd=ROOT, capture_output=True, text=True)
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def test_every_contract_is_compatible_with_its_first_published_schema():
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: no published history to compare with")
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True)
    if shallow.stdout.strip() == "true":
        pytest.skip("a shallow clone: the commits that first published the schemas are not here")
    generated = catalog.render()
    checked, problems = 0, {}
    for name, content in sorted(generated.items()):
        if not name.endswith(".json"):
            continue
        published = first_committed(f"docs/events/{name}")
        if published is None:
            continue
        checked += 1
        found = breaking_changes(published, json.loads(content))
        if found:
            problems[name] = found
    assert checked >= 50 and not problems, problems


@pytest.mark.parametrize("change, expected", [
    (lambda p: p["properties"].pop("shipment_state"), "shipment_state"),
    (lambda p: p["properties"].update(total={"type": "number"}), "total"),
    (lambda p: (p["properties"].update(channel={"type": "string"}), p["required"].append("channel")), "channel"),
    (lambda p: p["required"].remove("payment_state"), "payment_state"),
    (lambda p: p["properties"].update(reference={"type": "integer"}), "reference"),
])
def test_the_compatibility_check_refuses_what_would_break_a_subscriber(change, expected):
    published = schema_of("order.OrderCompleted.v1")
    changed = copy.deepcopy(published)
    change(changed["properties"]["payload"])
    found = breaking_changes(published, changed)
    assert found and any(expected in problem for problem in found), found


def test_the_compatibility_check_allows_an_added_optional_field_and_a_narrowing():
    published = schema_of("order.OrderCompleted.v1")
    changed = copy.deepcopy(published)
    payload = changed["properties"]["payload"]
    payload["properties"]["gift_message"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    payload["properties"]["reference"] = {"type": "string"}  # was string or null: every new value is still valid
    assert breaking_changes(published, changed) == []
    # StockAllocated.v1 gained two optional fields after it was first published: still compatible.
    assert breaking_changes(first_committed("docs/events/shipping.StockAllocated.v1.json")
                            or schema_of("shipping.StockAllocated.v1"),
                            schema_of("shipping.StockAllocated.v1")) == []


def test_the_compatibility_check_refuses_a_bound_dropped_or_loosened_and_allows_one_tightened():
    published = schema_of("order.OrderCompleted.v1")
    published["properties"]["sequence"] = {"type": "integer", "minimum": 1}
    published["properties"]["event_id"] = {"type": "string", "format": "uuid"}
    dropped = copy.deepcopy(published)
    dropped["properties"]["sequence"] = {"type": "integer"}
    loosened = copy.deepcopy(published)
    loosened["properties"]["sequence"]["minimum"] = 0
    unformatted = copy.deepcopy(published)
    del unformatted["properties"]["event_id"]["format"]
    for changed, word in ((dropped, "minimum"), (loosened, "minimum"), (unformatted, "format")):
        found = breaking_changes(published, changed)
        assert found and any(word in problem for problem in found), found
    tightened = copy.deepcopy(published)
    tightened["properties"]["sequence"]["minimum"] = 2
    assert breaking_changes(published, tightened) == []
