-- Backorders: a backorderable stock item sells beyond its count, which then goes below zero
-- (as Solidus's does); one that is not backorderable still never does.
ALTER TABLE stock_items DROP CONSTRAINT stock_items_count_on_hand_check;
ALTER TABLE stock_items ADD CONSTRAINT stock_items_count_on_hand_check CHECK (count_on_hand >= 0 OR backorderable);
