-- Solidus discards (soft-deletes) variants: no longer sold, still shown on the orders that
-- hold them, and refused when such an order is completed.
ALTER TABLE variants ADD COLUMN discarded_at timestamptz;
