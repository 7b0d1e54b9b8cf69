-- The orders this service has heard of (from order.events), so it can refuse commands
-- for unknown or completed orders without asking the order service.
CREATE TABLE IF NOT EXISTS order_directory (
    number       text        PRIMARY KEY,
    state        text        NOT NULL,
    currency     text        NOT NULL,
    updated_at   timestamptz NOT NULL
);
