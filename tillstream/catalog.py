"""The event catalogue, generated from the contract models in `shared.contracts`.

`docs/events/` holds one JSON Schema per event (the whole envelope, with that event's
payload) named by its stable contract name, `asyncapi.yaml` (AsyncAPI 3.0: the topics,
each service's `<service>.events`, their messages and Kafka headers) and `README.md` (a
table, and one of the retired contracts: no longer produced, their schemas kept for the
history stored before, e.g. the saga's commands once on `order.saga`). A test fails when
the committed catalogue differs from what the models generate: run
`python -m tillstream.catalog` after changing a contract.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from shared.contracts import SERVICES  # (importing registers every event type)
from shared.contracts.dead_letters import DeadLetterNotice
from shared.contracts.order import SAGA_COMMANDS
from shared.envelope import EVENT_TYPES, DomainEvent
from shared.kafka import SAGA_TOPIC

ROOT = Path(__file__).resolve().parent.parent
CATALOG_DIR = ROOT / "docs" / "events"
HEADERS = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string", "format": "uuid"},
        "event_type": {"type": "string"},
        "event_version": {"type": "string", "pattern": "^[0-9]+$"},
        "correlation_id": {"type": "string"},
        "causation_id": {"type": "string"},
        "traceparent": {"type": "string", "description": "W3C trace context"},
    },
    "required": ["event_id", "event_type", "event_version", "correlation_id", "traceparent"],
}


def contract_name(cls: type[DomainEvent]) -> str:
    return f"{cls.event_type}.v{cls.event_version}"


def open_to_additions(schema: object) -> object:
    """The schema without `additionalProperties: false`: a writer may not invent fields (the
    models forbid them), but a subscriber must accept the optional ones a later release adds
    within the version, as the README's evolution policy promises."""
    if isinstance(schema, dict):
        return {k: open_to_additions(v) for k, v in schema.items()
                if not (k == "additionalProperties" and v is False)}
    if isinstance(schema, list):
        return [open_to_additions(v) for v in schema]
    return schema


def envelope_schema(cls: type[DomainEvent]) -> dict:
    payload = open_to_additions(cls.model_json_schema(mode="serialization"))
    assert isinstance(payload, dict)
    defs = payload.pop("$defs", {})
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://tillstream.dev/events/{contract_name(cls)}.json",
        "title": contract_name(cls),
        "description": (cls.__doc__ or "").strip() or f"{cls.event_type} version {cls.event_version}",
        "type": "object",
        "properties": {
            "event_id": {"type": "string", "format": "uuid"},
            "type": {"const": cls.event_type},
            "version": {"const": cls.event_version},
            "aggregate_type": {"type": "string"},
            "aggregate_id": {"type": "string"},
            "sequence": {"type": "integer", "minimum": 1},
            "occurred_at": {"type": "string", "format": "date-time"},
            "correlation_id": {"type": "string"},
            "causation_id": {"type": ["string", "null"]},
            "payload": payload,
        },
        "required": ["event_id", "type", "version", "aggregate_type", "aggregate_id", "sequence", "occurred_at",
                     "correlation_id", "payload"],
    }
    if defs:
        schema["$defs"] = defs
    return schema


def events_by_service() -> dict[str, list[type[DomainEvent]]]:
    grouped: dict[str, list[type[DomainEvent]]] = {s: [] for s in SERVICES}
    for (event_type, _), cls in sorted(EVENT_TYPES.items()):
        service = event_type.split(".")[0]
        if service in grouped:
            grouped[service].append(cls)
    return grouped


def topic_of(cls: type[DomainEvent]) -> str:
    """The topic a contract is (or, retired, was) published on: the saga's old commands on `order.saga`,
    every other event on its service's `<service>.events`."""
    return SAGA_TOPIC if cls in SAGA_COMMANDS else f"{cls.event_type.split('.')[0]}.events"


def events_by_topic() -> dict[str, list[type[DomainEvent]]]:
    grouped: dict[str, list[type[DomainEvent]]] = {}
    for classes in events_by_service().values():
        for cls in classes:
            grouped.setdefault(topic_of(cls), []).append(cls)
    return grouped


CHANNELS = {
    "events": ("Events", "The {service} service's own events, keyed by order number: per order one stream, its"
                         " sequence 1..n in order (and the service's dead-letter notices, each keyed by its own"
                         " id)."),
    "saga": ("Saga", "The completion saga's commands to its participants (cart, shipping, payment), keyed by"
                     " order number; each saga instance is a stream of its own (aggregate type CompletionSaga,"
                     " aggregate id the saga's request id)."),
}


def message_key(cls: type[DomainEvent]) -> str:
    if issubclass(cls, DeadLetterNotice):
        return "the notice's own stream id (its aggregate id: consumer/letter id)"
    return "order number"


def asyncapi() -> dict:
    channels, operations, messages = {}, {}, {}
    for topic, every in events_by_topic().items():
        classes = [cls for cls in every if not cls.retired]
        if not classes:
            continue
        service, kind = topic.split(".")
        suffix, description = CHANNELS[kind]
        channel = f"{service}{suffix}"
        names = [contract_name(c) for c in classes]
        channels[channel] = {
            "address": topic,
            "description": description.format(service=service),
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
        }
        operations[f"receive{service.capitalize()}{suffix}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{n}"} for n in names],
        }
        for cls in classes:
            messages[contract_name(cls)] = {
                "name": contract_name(cls), "title": cls.__name__, "contentType": "application/json",
                "summary": (cls.__doc__ or "").strip().split("\n")[0] or cls.event_type,
                "headers": HEADERS,
                "payload": {"$ref": f"./{contract_name(cls)}.json"},
                "bindings": {"kafka": {"key": {"type": "string", "description": message_key(cls)}}},
            }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Tillstream domain events", "version": "1.0.0",
                 "description": "The public, versioned event contract of Tillstream's services. Messages are "
                                "JSON envelopes; Kafka headers repeat the ids for routing and tracing."},
        "defaultContentType": "application/json",
        "channels": channels, "operations": operations, "components": {"messages": messages},
    }


def render() -> dict[str, str]:
    """Every catalogue file: name → content."""
    files: dict[str, str] = {}
    rows = ["| contract | topic | summary |", "|---|---|---|"]
    retired = ["| contract | was on topic | summary |", "|---|---|---|"]
    for topic, classes in events_by_topic().items():
        for cls in classes:
            name = contract_name(cls)
            files[f"{name}.json"] = json.dumps(envelope_schema(cls), indent=2, sort_keys=False) + "\n"
            summary = " ".join((cls.__doc__ or "").split()) or "—"
            (retired if cls.retired else rows).append(f"| [`{name}`]({name}.json) | `{topic}` | {summary} |")
    files["asyncapi.yaml"] = yaml.safe_dump(asyncapi(), sort_keys=False, width=110)
    files["README.md"] = (
        "# Event catalogue\n\nGenerated by `python -m tillstream.catalog` from `shared/contracts/`; do not edit.\n"
        "Every message is the JSON envelope of `shared/envelope.py`; each schema below is that envelope with the\n"
        "event's payload. `asyncapi.yaml` describes the topics, messages and Kafka headers.\n\n"
        + "\n".join(rows) + "\n\n## Retired\n\nNo longer produced; kept so the history stored before still"
        " decodes (`tillstream events read`, a rebuild). Readers of these should stop expecting them.\n\n"
        + "\n".join(retired) + "\n")
    return files


def write(directory: Path = CATALOG_DIR) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = render()
    for stale in directory.glob("*"):
        if stale.name not in files:
            stale.unlink()
    for name, content in files.items():
        (directory / name).write_text(content)
    return sorted(files)


if __name__ == "__main__":
    written = write()
    print(f"wrote {len(written)} files to {CATALOG_DIR}", file=sys.stderr)
