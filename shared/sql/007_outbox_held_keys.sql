-- A parked row holds back the later rows of its key (shared/outbox.py): the relay looks the
-- key up among the parked rows for every row it reads, so that lookup is an index probe
-- (into an index that is empty while nothing is parked).
CREATE INDEX IF NOT EXISTS outbox_parked_keys ON outbox (key, id) WHERE parked_at IS NOT NULL;
