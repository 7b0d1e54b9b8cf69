ALTER TABLE order_view
    ADD COLUMN payment_total   numeric(12,2) NOT NULL DEFAULT 0,
    ADD COLUMN payment_state   text,
    ADD COLUMN shipment_state  text;
