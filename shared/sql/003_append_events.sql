-- An append in one round trip: the writers' table lock, the events, their outbox rows (in
-- event order) and the relay's wake-up (delivered at commit). Taking the lock in here
-- rather than with a `LOCK TABLE` statement of its own saves a round trip per append;
-- it is still taken before any position is drawn, and held until commit.
CREATE OR REPLACE FUNCTION append_events(
    event_ids uuid[], aggregate_types text[], aggregate_ids text[], sequences int[],
    event_types text[], versions int[], occurred_ats timestamptz[], correlation_ids text[],
    causation_ids text[], payloads jsonb[],
    message_topic text, message_key text, message_values bytea[], message_headers text[],
    wake_channel text)
RETURNS TABLE (stored_position bigint, stored_event_id uuid)
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE events IN EXCLUSIVE MODE;
    RETURN QUERY
    WITH stored AS (
        INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, type, version,
                            occurred_at, correlation_id, causation_id, payload)
        SELECT * FROM unnest(event_ids, aggregate_types, aggregate_ids, sequences, event_types,
                             versions, occurred_ats, correlation_ids, causation_ids, payloads)
        RETURNING events.position, events.event_id
    ), queued AS (
        INSERT INTO outbox (topic, key, value, headers)
        SELECT message_topic, message_key, m.value, m.headers::jsonb
        FROM unnest(message_values, message_headers) WITH ORDINALITY AS m(value, headers, n) ORDER BY m.n
    )
    SELECT stored.position, stored.event_id FROM stored;
    PERFORM pg_notify(wake_channel, '');
END
$$;
