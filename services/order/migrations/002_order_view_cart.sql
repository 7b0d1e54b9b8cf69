-- What the order view knows from the cart service.
ALTER TABLE order_view
    ADD COLUMN item_total        numeric(12,2) NOT NULL DEFAULT 0,
    ADD COLUMN adjustment_total  numeric(12,2) NOT NULL DEFAULT 0,
    ADD COLUMN ship_total        numeric(12,2) NOT NULL DEFAULT 0,
    ADD COLUMN total_quantity    integer       NOT NULL DEFAULT 0,
    ADD COLUMN item_count        integer       NOT NULL DEFAULT 0,
    ADD COLUMN adjustments       jsonb         NOT NULL DEFAULT '[]',
    ADD COLUMN cart_version      integer       NOT NULL DEFAULT 0;

CREATE TABLE order_line_items (
    id            integer       PRIMARY KEY,
    order_number  text          NOT NULL REFERENCES order_view (number),
    variant_id    integer       NOT NULL,
    quantity      integer       NOT NULL,
    price         numeric(12,2) NOT NULL,
    variant       jsonb         NOT NULL
);
CREATE INDEX order_line_items_order ON order_line_items (order_number);
