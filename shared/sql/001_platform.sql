-- Platform tables every service schema has. Applied with search_path set to the schema.

-- The event store. (aggregate_type, aggregate_id, sequence) is the optimistic-concurrency
-- guard; `position` is the global order. Writers take an EXCLUSIVE table lock before
-- inserting, so positions become visible in commit order and a follower reading
-- "position > last seen" never skips a late commit.
CREATE SEQUENCE IF NOT EXISTS events_position_seq;
CREATE TABLE IF NOT EXISTS events (
    position        bigint      NOT NULL DEFAULT nextval('events_position_seq') UNIQUE,
    event_id        uuid        PRIMARY KEY,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        integer     NOT NULL,
    type            text        NOT NULL,
    version         integer     NOT NULL,
    occurred_at     timestamptz NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text,
    payload         jsonb       NOT NULL,
    CONSTRAINT events_stream_sequence UNIQUE (aggregate_type, aggregate_id, sequence)
);
ALTER SEQUENCE events_position_seq OWNED BY events.position;
CREATE INDEX IF NOT EXISTS events_correlation ON events (correlation_id);

-- Transactional outbox: written in the same transaction as the events it publishes.
CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial   PRIMARY KEY,
    topic       text        NOT NULL,
    key         text        NOT NULL,
    value       bytea       NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Idempotency records: a consumer inserts the event id in the same transaction as the
-- handler's effects, so a duplicate delivery changes nothing.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer      text        NOT NULL,
    event_id      uuid        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- A durable copy of every dead-lettered message (the broker may keep data only in memory).
CREATE TABLE IF NOT EXISTS dead_letters (
    id            bigserial   PRIMARY KEY,
    consumer      text        NOT NULL,
    topic         text        NOT NULL,
    partition     integer     NOT NULL,
    "offset"      bigint      NOT NULL,
    key           text,
    value         bytea       NOT NULL,
    headers       jsonb       NOT NULL DEFAULT '[]',
    error         text        NOT NULL,
    attempts      integer     NOT NULL,
    failed_at     timestamptz NOT NULL DEFAULT now(),
    replayed_at   timestamptz
);
