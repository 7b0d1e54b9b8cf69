-- Where stock is, how much, and how it ships.
CREATE TABLE zones (
    id           integer PRIMARY KEY,
    name         text    NOT NULL,
    description  text    NOT NULL DEFAULT '',
    countries    text[]  NOT NULL  -- ISO codes; GetCandy also matches by country name
);
CREATE TABLE stock_locations (
    id      integer PRIMARY KEY,
    name    text    NOT NULL,
    active  boolean NOT NULL DEFAULT true
);
CREATE TABLE stock_items (
    stock_location_id  integer NOT NULL REFERENCES stock_locations (id),
    variant_id         integer NOT NULL,
    count_on_hand      integer NOT NULL CHECK (count_on_hand >= 0),
    backorderable      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (stock_location_id, variant_id)
);
CREATE TABLE shipping_methods (
    id                  integer       PRIMARY KEY,
    name                text          NOT NULL,
    code                text          NOT NULL,
    cost                numeric(12,2) NOT NULL,
    currency            text          NOT NULL,
    zone_ids            integer[]     NOT NULL,
    available_to_users  boolean       NOT NULL DEFAULT true
);
CREATE SEQUENCE shipping_ids;  -- shipment and shipping-rate ids
-- Shipment number → order number: shipment endpoints are addressed by shipment number.
CREATE TABLE shipment_index (
    number        text PRIMARY KEY,
    order_number  text NOT NULL
);
