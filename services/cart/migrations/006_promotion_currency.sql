-- A flat promotion is an amount of one currency: it applies only to orders in that currency
-- (a percentage applies anywhere, currency NULL). Flat promotions defined before were USD's.
ALTER TABLE promotions ADD COLUMN currency text;
UPDATE promotions SET currency = 'USD' WHERE kind = 'order_flat';
ALTER TABLE promotions ADD CONSTRAINT flat_promotions_have_a_currency
    CHECK (kind <> 'order_flat' OR currency IS NOT NULL);
