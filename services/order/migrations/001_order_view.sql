-- The order view: what the public APIs show of an order, kept by projections.py.
CREATE TABLE order_view (
    number        text        PRIMARY KEY,
    guest_token   text        NOT NULL,
    state         text        NOT NULL,
    currency      text        NOT NULL,
    email         text,
    user_id       bigint,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    completed_at  timestamptz
);
