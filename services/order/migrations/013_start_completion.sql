-- The completion's start and end in fewer statements (issue #26).
--
-- The start: CompletionRequested, the view's pending request and the saga's row in ONE statement,
-- `project_append_and_start_saga` (services/order/commands.py `complete`): the view's changes
-- (as project_and_append_events applies them), the instance (shared/sql/015 `start_saga`), then
-- append_events, whose result it returns. No BEGIN/COMMIT: the statement is its own transaction,
-- so the event, the view and the saga row commit together or not at all; a concurrent append
-- to the order's stream fails it (a unique violation: ConcurrencyConflict) and nothing is stored.
-- The view's row and the saga's are written before append_events takes its table lock, as
-- everywhere.
--
-- The end: OrderCompleted's fold no longer reads the shipments to set their states: a `place`
-- patch of the shipments list does it in SQL (apply_view_changes, replaced below with that one
-- patch more), so the pivot's write is one statement with its view changes too.

CREATE OR REPLACE FUNCTION apply_view_changes(view_changes jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    change jsonb;
    patch jsonb;
    current_state text;
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
            IF change ? 'patch' THEN  -- one element of a list column changed in place: no read first
                patch := change->'patch';
                IF NOT patch->>'column' = ANY (ARRAY['payments', 'shipments']) THEN
                    RAISE EXCEPTION 'not a list of the order view: %', patch->>'column';
                END IF;
                IF patch->>'how' = 'merge' THEN  -- the elements whose key has the value get `with`'s fields
                    EXECUTE format('UPDATE order_view SET %1$I = (SELECT coalesce(jsonb_agg(CASE WHEN e->$2 = $3'
                                   ' THEN e || $4 ELSE e END ORDER BY i), ''[]'') FROM jsonb_array_elements('
                                   'coalesce(%1$I, ''[]'')) WITH ORDINALITY AS x(e, i)) WHERE number = $1',
                                   patch->>'column')
                        USING change->>'number', patch->>'key', patch->'value', patch->'with';
                ELSIF patch->>'how' = 'append' THEN  -- `with` added, unless an element has its key's value
                    EXECUTE format('UPDATE order_view SET %1$I = coalesce(%1$I, ''[]'') || jsonb_build_array($4)'
                                   ' WHERE number = $1 AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements('
                                   'coalesce(%1$I, ''[]'')) AS e WHERE e->$2 = $3)', patch->>'column')
                        USING change->>'number', patch->>'key', patch->'value', patch->'with';
                ELSIF patch->>'how' = 'place' AND patch->>'column' = 'shipments' THEN
                    -- as view.py placed_shipment_states: each shipment `ready` when the order is paid
                    -- and nothing in it is backordered (a JSON value Python holds true), else `pending`
                    UPDATE order_view AS v SET shipments = (SELECT coalesce(jsonb_agg(e || jsonb_build_object('state',
                        CASE WHEN patch->>'payment_state' = 'paid' AND NOT EXISTS (
                            SELECT 1 FROM jsonb_array_elements(coalesce(e->'manifest', '[]')) AS m
                             WHERE m->'backordered' NOT IN ('0', 'false', 'null', '""', '[]', '{}'))
                        THEN 'ready' ELSE 'pending' END) ORDER BY i), '[]')
                        FROM jsonb_array_elements(coalesce(v.shipments, '[]')) WITH ORDINALITY AS x(e, i))
                    WHERE v.number = change->>'number';
                ELSE
                    RAISE EXCEPTION 'unknown patch: %', patch->>'how';
                END IF;
                IF (patch->>'ship_total')::boolean THEN  -- as projections._set_shipments: the selected rates
                    UPDATE order_view SET ship_total = coalesce((
                        SELECT sum((r->>'cost')::numeric) FROM jsonb_array_elements(shipments) AS sh,
                               jsonb_array_elements(sh->'rates') AS r WHERE (r->>'selected')::boolean), 0)
                    WHERE number = change->>'number';
                END IF;
            END IF;
            IF assignments <> '' THEN
                EXECUTE format('UPDATE order_view AS v SET %s FROM jsonb_populate_record(NULL::order_view, $1) AS r'
                               ' WHERE v.number = $2 AND ($4 IS NULL OR v.cart_version < $4)', assignments)
                    USING change->'set', change->>'number', (change->>'stamp')::timestamptz,
                          (change->>'below_cart_version')::int;
            END IF;
            IF change ? 'notify' THEN
                PERFORM pg_notify(change->'notify'->>'channel', change->'notify'->>'payload');
            END IF;
        WHEN 'expect_state_not_in' THEN  -- a premise of the changes that follow: the Order would record nothing
            SELECT v.state INTO current_state FROM order_view AS v WHERE v.number = change->>'number' FOR UPDATE;
            IF current_state = ANY (ARRAY(SELECT jsonb_array_elements_text(change->'states'))) THEN
                RAISE EXCEPTION 'order % is %, which the changes did not expect', change->>'number', current_state
                    USING ERRCODE = 'TS001';  -- shared/eventstore.py PREMISE_FAILED: the handler decides
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
END
$$;

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
-- CREATE OR REPLACE reset apply_view_changes' settings: its search_path again.
ALTER FUNCTION apply_view_changes(jsonb) SET search_path FROM CURRENT;
ALTER FUNCTION project_append_and_start_saga(uuid[], text[], text[], int[], text[], int[], timestamptz[], text[],
                                             text[], jsonb[], text, text, bytea[], text[], text, text, jsonb)
    SET search_path FROM CURRENT;
