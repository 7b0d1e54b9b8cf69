"""The event envelope: one JSON serialisation, used on the wire (Kafka) and in the store."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from shared import context

# (type, version) -> model: how a stored or received envelope becomes a typed event.
EVENT_TYPES: dict[tuple[str, int], type["DomainEvent"]] = {}
# (type, from version) -> payload function giving the next version: schema evolution.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def upcaster(event_type: str, from_version: int):
    """Register how a stored `from_version` payload becomes `from_version + 1`."""
    def register(function: Callable[[dict[str, Any]], dict[str, Any]]):
        UPCASTERS[(event_type, from_version)] = function
        return function
    return register


class DomainEvent(BaseModel):
    """A past-tense fact. Subclasses live in `shared.contracts` and name their type.

    `event_type` is "<service>.<EventName>"; with `event_version` it forms the stable
    contract name "<service>.<EventName>.v<version>" that subscribers rely on.
    """

    # A writer's misnamed field is an error; a reader ignores fields it does not know, since a
    # producer may add optional ones within a version (the README's evolution policy): see
    # `decode_event`, which keeps only the model's fields.
    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1
    # No longer produced; the model stays so stored history still decodes (`events read`, a
    # rebuild), and the catalogue lists it apart, out of the AsyncAPI channels.
    retired: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" in cls.__dict__:
            EVENT_TYPES[(cls.event_type, cls.event_version)] = cls

    def payload(self) -> dict[str, Any]:
        # mode="json" turns Decimal into strings, so money never becomes a float.
        return self.model_dump(mode="json")


class EventEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: uuid.UUID
    type: str
    version: int
    aggregate_type: str
    aggregate_id: str
    sequence: int
    occurred_at: AwareDatetime
    correlation_id: str
    causation_id: str | None = None
    payload: dict[str, Any]
    # Position in the global order of the store that recorded it; set when read back.
    position: int | None = None

    @property
    def contract_name(self) -> str:
        return f"{self.type}.v{self.version}"

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude={"position"}).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> "EventEnvelope":
        return cls.model_validate_json(raw)

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("event_id", str(self.event_id).encode()),
            ("event_type", self.type.encode()),
            ("event_version", str(self.version).encode()),
            ("correlation_id", self.correlation_id.encode()),
            ("traceparent", traceparent(self.correlation_id, self.event_id).encode()),
        ]
        if self.causation_id:
            headers.append(("causation_id", self.causation_id.encode()))
        return headers


def traceparent(correlation_id: str, event_id: uuid.UUID) -> str:
    """W3C trace context: the correlation id names the trace, the event the span."""
    trace = uuid.uuid5(uuid.NAMESPACE_URL, correlation_id).hex
    return f"00-{trace}-{event_id.hex[:16]}-01"


def upcast(envelope: "EventEnvelope") -> "EventEnvelope":
    """The envelope at its type's newest version (older events are never rewritten in
    the store or on Kafka; they are read through the upcaster chain)."""
    version, payload = envelope.version, envelope.payload
    while (envelope.type, version) in UPCASTERS:
        payload = UPCASTERS[(envelope.type, version)](dict(payload))
        version += 1
    if version == envelope.version:
        return envelope
    return envelope.model_copy(update={"version": version, "payload": payload})


def newest_message(value: bytes, headers: list[tuple[str, bytes]]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A message about to be published or shown again (outbox, dead-letter copy, replay,
    the CLI) with its event at the newest version: an older version may hold what its
    successor dropped (order.OrderCreated.v1's guest token). Only messages whose headers
    name an upcastable contract are parsed."""
    import shared.contracts  # noqa: F401  (the upcasters are registered where the contracts are defined)

    names = dict(headers)
    try:
        contract = (names["event_type"].decode(), int(names["event_version"]))
    except (KeyError, ValueError, UnicodeDecodeError):
        return value, headers
    if contract not in UPCASTERS:
        return value, headers
    try:
        envelope = upcast(EventEnvelope.from_json(value))
    except ValueError:
        return value, headers  # not an envelope: nothing an upcaster could read either
    version = str(envelope.version).encode()
    return envelope.to_json(), [(k, version if k == "event_version" else v) for k, v in headers]


def decode_event(envelope: "EventEnvelope") -> DomainEvent:
    envelope = upcast(envelope)
    cls = EVENT_TYPES.get((envelope.type, envelope.version))
    if cls is None:
        raise LookupError(f"unknown event contract {envelope.contract_name}")
    return cls.model_validate(known_fields(cls, envelope.payload))


def known_fields(cls: type[DomainEvent], payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without the fields a later producer added that this reader does not know."""
    if payload.keys() <= cls.model_fields.keys():
        return payload
    return {name: value for name, value in payload.items() if name in cls.model_fields}


def decode_event_json(event_type: str, version: int, payload_json: str | bytes) -> DomainEvent:
    """`decode_event` for a payload still in JSON (bulk reads): pydantic parses and
    validates it in one pass unless an upcaster has to rewrite it first."""
    cls = EVENT_TYPES.get((event_type, version))
    if cls is None or (event_type, version) in UPCASTERS:
        envelope = EventEnvelope.model_construct(type=event_type, version=version, payload=json.loads(payload_json))
        return decode_event(envelope)
    try:
        return cls.model_validate_json(payload_json)
    except ValidationError:
        # A field added by a later producer (anything else is refused again by decode_event).
        return cls.model_validate(known_fields(cls, json.loads(payload_json)))


def envelope_for(
    event: DomainEvent, *, aggregate_type: str, aggregate_id: str, sequence: int
) -> EventEnvelope:
    """Wrap a domain event for the store, stamping the current correlation and causation."""
    return EventEnvelope(
        event_id=uuid.uuid4(),
        type=event.event_type,
        version=event.event_version,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        sequence=sequence,
        occurred_at=datetime.now(timezone.utc),
        correlation_id=context.current_correlation_id(),
        causation_id=context.causation_id.get(),
        payload=event.payload(),
    )

