-- Where each event was published, so a replay (tillstream/operations.py `replay`) sends its
-- copy to the same topic, under the same key, hence to the same partition as the live one:
--   message_key    the Kafka key, NULL: the aggregate id (an order's events: the order number).
--                  A saga's commands are keyed by their order's number, not by the saga id.
--   message_topic  the topic, NULL: the service's own (`<service>.events`). The completion
--                  saga's commands go to `order.saga` (shared/kafka.py SAGA_TOPIC).
ALTER TABLE events ADD COLUMN IF NOT EXISTS message_key text;
ALTER TABLE events ADD COLUMN IF NOT EXISTS message_topic text;

-- Rows written before: a saga's commands were keyed by its host (the order number), and a
-- dead-letter notice like the message it was about (the order number). Both were published
-- on the service's own topic, so their topic stays NULL.
UPDATE events AS e SET message_key = s.key FROM sagas AS s
 WHERE e.aggregate_type = 'CompletionSaga' AND e.aggregate_id = s.id AND e.message_key IS NULL;
UPDATE events SET message_key = payload->>'original_key'
 WHERE aggregate_type = 'DeadLetter' AND message_key IS NULL AND payload->>'original_key' IS NOT NULL;

-- The append (003_append_events.sql) now also records the key and the topic with each
-- event: `stored_topic` is the topic to record (NULL when it is the service's own).
DROP FUNCTION IF EXISTS append_events(uuid[], text[], text[], int[], text[], int[], timestamptz[], text[], text[],
                                      jsonb[], text, text, bytea[], text[], text);
CREATE FUNCTION append_events(
    event_ids uuid[], aggregate_types text[], aggregate_ids text[], sequences int[],
    event_types text[], versions int[], occurred_ats timestamptz[], correlation_ids text[],
    causation_ids text[], payloads jsonb[],
    message_topic text, message_key text, message_values bytea[], message_headers text[],
    wake_channel text, stored_topic text)
RETURNS TABLE (stored_position bigint, stored_event_id uuid)
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE events IN EXCLUSIVE MODE;
    RETURN QUERY
    WITH stored AS (
        INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, type, version,
                            occurred_at, correlation_id, causation_id, payload, message_key, message_topic)
        SELECT e.*, NULLIF(message_key, e.aggregate_id), stored_topic
        FROM unnest(event_ids, aggregate_types, aggregate_ids, sequences, event_types,
                    versions, occurred_ats, correlation_ids, causation_ids, payloads)
             AS e(event_id, aggregate_type, aggregate_id, sequence, type, version, occurred_at,
                  correlation_id, causation_id, payload)
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
