-- The view keeps what the events keep since order.OrderCreated.v2: the guest token's
-- SHA-256 (hex), never the token; and the dialect that created the order (NULL: created
-- before dialects were recorded, reachable by both).
ALTER TABLE order_view ADD COLUMN guest_token_digest text, ADD COLUMN dialect text;
UPDATE order_view SET guest_token_digest = encode(sha256(convert_to(guest_token, 'UTF8')), 'hex');
ALTER TABLE order_view ALTER COLUMN guest_token_digest SET NOT NULL, DROP COLUMN guest_token;
