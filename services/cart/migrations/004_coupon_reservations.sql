-- A completion reserves its cart's promotions when it locks the cart (a row here, counted
-- by usage limits like a use); the reservation becomes a use for good when the order
-- completes, and is deleted if the completion fails. Rows from before were uses.
ALTER TABLE promotion_uses ADD COLUMN completed boolean NOT NULL DEFAULT true;
ALTER TABLE promotion_uses ALTER COLUMN completed SET DEFAULT false;
