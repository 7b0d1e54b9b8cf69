CREATE TABLE payment_methods (
    id                  integer PRIMARY KEY,
    name                text    NOT NULL,
    method_type         text    NOT NULL CHECK (method_type IN ('check', 'gateway')),
    auto_capture        boolean NOT NULL DEFAULT false,
    active              boolean NOT NULL DEFAULT true,
    available_to_users  boolean NOT NULL DEFAULT true
);
-- Card numbers live only here, never in events; events carry the token.
CREATE TABLE card_vault (
    gateway_token  text        PRIMARY KEY,
    number         text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE payment_ids;
CREATE SEQUENCE card_ids;
