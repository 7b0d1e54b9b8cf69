-- The gateway's token for each card, kept by the payment service alone: since
-- payment.PaymentCreated.v2 no event carries it (it is what the card is charged with).
-- Cards entered before are carried over from their stored v1 events (never rewritten).
CREATE TABLE card_sources (
    card_id        bigint  PRIMARY KEY,
    gateway_token  text    NOT NULL
);
INSERT INTO card_sources (card_id, gateway_token)
SELECT (payload -> 'source' ->> 'id')::bigint, payload -> 'source' ->> 'gateway_token'
FROM events
WHERE type = 'payment.PaymentCreated' AND version = 1 AND jsonb_typeof(payload -> 'source') = 'object'
  AND payload -> 'source' ->> 'gateway_token' IS NOT NULL
ON CONFLICT (card_id) DO NOTHING;
