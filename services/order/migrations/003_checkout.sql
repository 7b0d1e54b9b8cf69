-- Reference data for address validation, and what the view shows of the checkout.
CREATE TABLE countries (
    id               integer PRIMARY KEY,
    iso              text    NOT NULL UNIQUE,
    iso3             text    NOT NULL,
    iso_name         text    NOT NULL,
    name             text    NOT NULL,
    numcode          integer NOT NULL,
    states_required  boolean NOT NULL DEFAULT false
);
CREATE TABLE states (
    id          integer PRIMARY KEY,
    country_id  integer NOT NULL REFERENCES countries (id),
    name        text    NOT NULL,
    abbr        text    NOT NULL
);
CREATE SEQUENCE address_ids;

ALTER TABLE order_view
    ADD COLUMN bill_address     jsonb,
    ADD COLUMN ship_address     jsonb,
    ADD COLUMN shipments        jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN pending_request  text,
    ADD COLUMN refusal          jsonb;
