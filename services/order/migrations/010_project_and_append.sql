-- An order command's write in one statement (issue #26.3): the order view's changes, as
-- services/order/view.py BufferedOrderView records them (JSON), applied here, then the events
-- appended by append_events, whose result this returns. No BEGIN/COMMIT around it: the
-- statement is its own transaction, so the view changes commit with the events or not at all.
-- The view's rows are written before append_events takes its table lock, as everywhere (the
-- order's row and stream are locked before the events table: shared/eventstore.py).
--
-- Column names come from the changes' keys: only the table's own columns pass (checked
-- against the catalog, then quoted with %I), and the values are read with
-- jsonb_populate_record, so each takes its column's type (money from strings, times from
-- ISO strings, jsonb as it is).

CREATE FUNCTION checked_view_columns(tab regclass, fields jsonb) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    names text[] := ARRAY(SELECT jsonb_object_keys(fields));
    unknown text[] := ARRAY(SELECT n FROM unnest(names) AS n
                            WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = tab
                                              AND a.attname = n AND a.attnum > 0 AND NOT a.attisdropped));
BEGIN
    IF cardinality(unknown) > 0 THEN
        RAISE EXCEPTION 'not a column of %: %', tab, unknown USING ERRCODE = 'undefined_column';
    END IF;
    RETURN names;
END
$$;

CREATE FUNCTION project_and_append_events(
    event_ids uuid[], aggregate_types text[], aggregate_ids text[], sequences int[],
    event_types text[], versions int[], occurred_ats timestamptz[], correlation_ids text[],
    causation_ids text[], payloads jsonb[],
    message_topic text, message_key text, message_values bytea[], message_headers text[],
    wake_channel text, stored_topic text, view_changes jsonb)
RETURNS TABLE (stored_position bigint, stored_event_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    change jsonb;
    names text[];
    assignments text;
BEGIN
    FOR change IN SELECT c FROM jsonb_array_elements(view_changes) AS c LOOP
        CASE change->>'op'
        WHEN 'create' THEN  -- as SqlOrderView.create: a row already there is kept
            names := checked_view_columns('order_view', change->'row');
            EXECUTE format('INSERT INTO order_view (%s) SELECT %s FROM jsonb_populate_record(NULL::order_view, $1) AS r'
                           ' ON CONFLICT (number) DO NOTHING',
                           (SELECT string_agg(format('%I', n), ', ') FROM unnest(names) AS n),
                           (SELECT string_agg(format('r.%I', n), ', ') FROM unnest(names) AS n))
                USING change->'row';
        WHEN 'update' THEN  -- as SqlOrderView._update_row: a stamp rides on it, the notice follows it
            names := checked_view_columns('order_view', change->'set');
            IF 'number' = ANY (names) THEN
                RAISE EXCEPTION 'an order''s number does not change';
            END IF;
            assignments := concat_ws(', ',
                (SELECT string_agg(format('%I = r.%I', n, n), ', ') FROM unnest(names) AS n),
                CASE WHEN change ? 'stamp' THEN 'updated_at = greatest(v.updated_at, $3)' END);
            IF assignments <> '' THEN
                EXECUTE format('UPDATE order_view AS v SET %s FROM jsonb_populate_record(NULL::order_view, $1) AS r'
                               ' WHERE v.number = $2 AND ($4 IS NULL OR v.cart_version < $4)', assignments)
                    USING change->'set', change->>'number', (change->>'stamp')::timestamptz,
                          (change->>'below_cart_version')::int;
            END IF;
            IF change ? 'notify' THEN
                PERFORM pg_notify(change->'notify'->>'channel', change->'notify'->>'payload');
            END IF;
        WHEN 'add_line' THEN
            names := checked_view_columns('order_line_items', change->'line');
            EXECUTE format('INSERT INTO order_line_items (%s) SELECT %s'
                           ' FROM jsonb_populate_record(NULL::order_line_items, $1) AS r ON CONFLICT (id) DO NOTHING',
                           (SELECT string_agg(format('%I', n), ', ') FROM unnest(names) AS n),
                           (SELECT string_agg(format('r.%I', n), ', ') FROM unnest(names) AS n))
                USING change->'line';
        WHEN 'set_line_quantity' THEN
            UPDATE order_line_items SET quantity = (change->>'quantity')::int WHERE id = (change->>'id')::int;
        WHEN 'remove_line' THEN
            DELETE FROM order_line_items WHERE id = (change->>'id')::int;
        WHEN 'remove_lines' THEN
            DELETE FROM order_line_items WHERE order_number = change->>'number';
        ELSE
            RAISE EXCEPTION 'unknown order view change: %', change->>'op';
        END CASE;
    END LOOP;
    RETURN QUERY SELECT * FROM append_events(
        event_ids, aggregate_types, aggregate_ids, sequences, event_types, versions, occurred_ats,
        correlation_ids, causation_ids, payloads, message_topic, message_key, message_values,
        message_headers, wake_channel, stored_topic);
END
$$;
-- Applied with search_path set to the schema: the functions name its tables, whoever calls.
ALTER FUNCTION checked_view_columns(regclass, jsonb) SET search_path FROM CURRENT;
ALTER FUNCTION project_and_append_events(uuid[], text[], text[], int[], text[], int[], timestamptz[], text[],
                                         text[], jsonb[], text, text, bytea[], text[], text, text, jsonb)
    SET search_path FROM CURRENT;
