-- The order view's changes of other services' events applied in THEIR append's statement, when
-- the order service shares their process (issue #26.3, shared/inline.py InlineProjection's
-- `statement`): `apply_inline` records the events as the `order.view` consumer's (so its Kafka
-- consumer passes them over) and applies the changes BufferedOrderView recorded, in one call
-- that the producing service's append statement makes before its own append_events (the order
-- view's rows are locked before a store's events table, as everywhere). No search_path switch
-- and no BEGIN/COMMIT: the functions run with the order's schema as theirs.
--
-- The changes' loop moves out of project_and_append_events (migration 010) into
-- apply_view_changes, which both call, so the two cannot apply a change differently. An update
-- may now also `patch` one element of the payments or shipments lists (merge fields into the
-- element with a key's value, or append one unless there is such an element): what the folds
-- of payments and rates did by reading the list first, so those folds need no read either
-- (SqlOrderView calls apply_view_changes for them too). An `expect_state_not_in` change is a
-- premise of those after it (a cart change restarts nothing while the order is in the cart): it
-- locks the order's row and fails the statement with SQLSTATE TS001 when the order's state is
-- one of those given, and the producer then runs the subscriber's handler instead.

CREATE FUNCTION apply_view_changes(view_changes jsonb) RETURNS void
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

CREATE OR REPLACE FUNCTION project_and_append_events(
    event_ids uuid[], aggregate_types text[], aggregate_ids text[], sequences int[],
    event_types text[], versions int[], occurred_ats timestamptz[], correlation_ids text[],
    causation_ids text[], payloads jsonb[],
    message_topic text, message_key text, message_values bytea[], message_headers text[],
    wake_channel text, stored_topic text, view_changes jsonb)
RETURNS TABLE (stored_position bigint, stored_event_id uuid)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM apply_view_changes(view_changes);
    RETURN QUERY SELECT * FROM append_events(
        event_ids, aggregate_types, aggregate_ids, sequences, event_types, versions, occurred_ats,
        correlation_ids, causation_ids, payloads, message_topic, message_key, message_values,
        message_headers, wake_channel, stored_topic);
END
$$;

CREATE FUNCTION apply_inline(consumer text, event_ids uuid[], view_changes jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO processed_events (consumer, event_id) SELECT apply_inline.consumer, unnest(event_ids);
    PERFORM apply_view_changes(view_changes);
    RETURN true;
END
$$;
-- Applied with search_path set to the schema: the functions name its tables, whoever calls.
ALTER FUNCTION apply_view_changes(jsonb) SET search_path FROM CURRENT;
ALTER FUNCTION apply_inline(text, uuid[], jsonb) SET search_path FROM CURRENT;
-- CREATE OR REPLACE reset its settings: its search_path again.
ALTER FUNCTION project_and_append_events(uuid[], text[], text[], int[], text[], int[], timestamptz[], text[],
                                         text[], jsonb[], text, text, bytea[], text[], text, text, jsonb)
    SET search_path FROM CURRENT;

-- What an order's write left in the view, read in the write's own statement
-- (shared/eventstore.py StatementProjection.reading_function, reading_the_write): joined
-- LATERAL to project_and_append_events' rows, so it runs after the write and, being volatile
-- (plpgsql: never inlined), with a snapshot that sees it. `order_read` is the one-order read of
-- services/order/view.py _READ_ORDER (a test compares the two answers: a column added to the
-- view must be added here too, by CREATE OR REPLACE VIEW).
CREATE VIEW order_read AS
SELECT v.*, coalesce(t.rate, 0) AS tax_rate, l.ids, l.variant_ids, l.quantities, l.prices, l.variants
FROM order_view v
LEFT JOIN tax_rates t ON t.currency = v.currency
LEFT JOIN LATERAL (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(variant_id ORDER BY id) AS variant_ids,
           array_agg(quantity ORDER BY id) AS quantities, array_agg(price ORDER BY id) AS prices,
           jsonb_agg(variant ORDER BY id) AS variants
    FROM order_line_items WHERE order_number = v.number) l ON true;

CREATE FUNCTION order_as_written(order_number text, written_at bigint) RETURNS SETOF order_read
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT * FROM order_read AS r WHERE r.number = order_number;
END
$$;
ALTER FUNCTION order_as_written(text, bigint) SET search_path FROM CURRENT;
