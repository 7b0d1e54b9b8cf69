-- Saga instances (shared/saga.py): each one's state and deadline, changed in the same
-- transaction as the commands it sends. Only services that host a saga write here.
CREATE TABLE IF NOT EXISTS sagas (
    id                text        PRIMARY KEY,   -- the request id its commands and answers carry
    saga              text        NOT NULL,      -- the definition, e.g. "completion"
    key               text        NOT NULL,      -- the host aggregate (the order number)
    correlation_id    text        NOT NULL,
    data              jsonb       NOT NULL,
    step              integer     NOT NULL,
    status            text        NOT NULL CHECK (status IN ('running', 'compensating', 'completed', 'failed')),
    invoked           text[]      NOT NULL DEFAULT '{}',
    pending           text[]      NOT NULL DEFAULT '{}',   -- compensations not yet answered
    failure           jsonb,
    command_event_id  text,       -- the current step's command: a dead-letter notice names it
    deadline_at       timestamptz,
    attempts          integer     NOT NULL DEFAULT 0,
    abort_requested   boolean     NOT NULL DEFAULT false,
    stream_version    integer     NOT NULL DEFAULT 0,      -- commands sent (its own event stream)
    started_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    ended_at          timestamptz
);
CREATE INDEX IF NOT EXISTS sagas_due ON sagas (deadline_at) WHERE status IN ('running', 'compensating');
CREATE INDEX IF NOT EXISTS sagas_key ON sagas (key);
CREATE INDEX IF NOT EXISTS sagas_command ON sagas (command_event_id) WHERE status = 'running';
