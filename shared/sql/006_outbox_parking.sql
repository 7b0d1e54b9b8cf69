-- A row the broker refuses for good (too large, say) is parked with its error instead of
-- being retried for ever in front of every later row: `tillstream outbox status` lists it.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS parked_at timestamptz;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS error text;
