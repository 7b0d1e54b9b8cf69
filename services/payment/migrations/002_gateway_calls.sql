-- The test gateway's own ledger, keyed by idempotency key: a retried call returns the
-- recorded outcome instead of charging again (as a real gateway's idempotency keys do).
CREATE TABLE gateway_calls (
    idempotency_key  text          PRIMARY KEY,
    action           text          NOT NULL,
    amount           numeric(12,2) NOT NULL,
    success          boolean       NOT NULL,
    authorization_code text,
    message          text,
    created_at       timestamptz   NOT NULL DEFAULT now()
);
