-- The completion's start and end in fewer statements (issue #26).
--
-- The start: CompletionRequested, the view's pending request and the saga's row in ONE statement,
-- `project_append_and_start_saga` (services/order/commands.py `complete`): the view's changes
-- (as project_and_append_events applies them), the instance (shared/sql/015 `start_saga`), then
-- append_events, whose result it returns. No BEGIN/COMMIT: the statement is its own transaction,
-- so the event, the view and the saga row commit together or not at all; a concurrent append
-- to the order's stream fails it (a unique violation: ConcurrencyConflict) and nothing is stored.
-- The view's row and the saga's are written before append_events takes its table lock, as
-- everywhere. (OrderCompleted's fold reads nothing since migration 013: the pivot's write is one
-- statement with its view changes too.)

CREATE FUNCTION project_append_and_start_saga(
    event_ids uuid[], aggregate_types text[], aggregate_ids text[], sequences int[],
    event_types text[], versions int[], occurred_ats timestamptz[], correlation_ids text[],
    causation_ids text[], payloads jsonb[],
    message_topic text, message_key text, message_values bytea[], message_headers text[],
    wake_channel text, stored_topic text, changes jsonb)
RETURNS TABLE (stored_position bigint, stored_event_id uuid)
LANGUAGE plpgsql AS $$
BEGIN
    -- `changes`: {"view": the view's changes (BufferedOrderView), "saga": the instance's row}
    IF jsonb_typeof(changes->'view') IS DISTINCT FROM 'array' OR jsonb_typeof(changes->'saga') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a saga''s start needs the view''s changes and the instance';
    END IF;
    PERFORM apply_view_changes(changes->'view');
    PERFORM start_saga(changes->'saga');
    RETURN QUERY SELECT * FROM append_events(
        event_ids, aggregate_types, aggregate_ids, sequences, event_types, versions, occurred_ats,
        correlation_ids, causation_ids, payloads, message_topic, message_key, message_values,
        message_headers, wake_channel, stored_topic);
END
$$;
-- Applied with search_path set to the schema: the functions name its tables, whoever calls.
ALTER FUNCTION project_append_and_start_saga(uuid[], text[], text[], int[], text[], int[], timestamptz[], text[],
                                             text[], jsonb[], text, text, bytea[], text[], text, text, jsonb)
    SET search_path FROM CURRENT;
