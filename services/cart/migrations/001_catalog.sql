-- The catalog the cart prices from, and the promotions (coupon codes) it can apply.
CREATE TABLE products (
    id           integer PRIMARY KEY,
    name         text    NOT NULL,
    slug         text    NOT NULL UNIQUE,
    description  text    NOT NULL DEFAULT ''
);
CREATE TABLE variants (
    id               integer PRIMARY KEY,
    product_id       integer NOT NULL REFERENCES products (id),
    sku              text    NOT NULL UNIQUE,
    name             text    NOT NULL,
    options_text     text    NOT NULL DEFAULT '',
    track_inventory  boolean NOT NULL DEFAULT true,
    is_master        boolean NOT NULL DEFAULT false
);
CREATE TABLE prices (
    variant_id  integer       NOT NULL REFERENCES variants (id),
    currency    text          NOT NULL,
    amount      numeric(12,2) NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (variant_id, currency)
);
CREATE TABLE promotions (
    id           integer       PRIMARY KEY,
    name         text          NOT NULL,
    code         text          NOT NULL UNIQUE,  -- stored lower-case
    kind         text          NOT NULL CHECK (kind IN ('order_flat', 'items_percent')),
    value        numeric(12,2) NOT NULL,
    starts_at    timestamptz,
    expires_at   timestamptz,
    usage_limit  integer
);
CREATE SEQUENCE line_item_ids;
