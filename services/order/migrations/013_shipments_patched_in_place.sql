-- Two more in-place changes of the order view's shipments, so that the folds of StockAllocated
-- (each item's backordered count) and of PaymentStateChanged and OrderCompleted (each shipment's
-- state once the order is placed) read nothing (issue #26): they ride in their append's statement
-- instead of reading the list in a transaction first. apply_view_changes is migration 012's with
-- the two patches `backordered` and `placed_states` (services/order/view.py shipments_backordered,
-- placed_shipment_states; MemoryOrderView applies the same in a rebuild, and a test compares them).

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
                ELSIF patch->>'how' = 'backordered' AND patch->>'column' = 'shipments' THEN
                    -- as projections' StockAllocated fold: each manifest item's backordered count from
                    -- `units` ("<shipment number>|<variant id>"), else its own, else 0
                    UPDATE order_view SET shipments = (
                        SELECT coalesce(jsonb_agg(CASE WHEN sh ? 'manifest' THEN sh || jsonb_build_object('manifest', (
                            SELECT coalesce(jsonb_agg(item || jsonb_build_object('backordered', coalesce(
                                patch->'units'->((sh->>'number') || '|' || (item->>'variant_id')),
                                item->'backordered', '0'::jsonb)) ORDER BY j), '[]')
                            FROM jsonb_array_elements(sh->'manifest') WITH ORDINALITY AS m(item, j)))
                            ELSE sh END ORDER BY i), '[]')
                        FROM jsonb_array_elements(coalesce(shipments, '[]')) WITH ORDINALITY AS x(sh, i))
                    WHERE number = change->>'number';
                ELSIF patch->>'how' = 'placed_states' AND patch->>'column' = 'shipments' THEN
                    -- as view.py placed_shipment_states: ready when paid and nothing backordered
                    UPDATE order_view SET shipments = (
                        SELECT coalesce(jsonb_agg(sh || jsonb_build_object('state', CASE
                            WHEN patch->>'payment_state' = 'paid' AND NOT EXISTS (
                                SELECT 1 FROM jsonb_array_elements(coalesce(sh->'manifest', '[]')) AS item
                                WHERE coalesce(item->'backordered', 'null'::jsonb)
                                      NOT IN ('null'::jsonb, '0'::jsonb, 'false'::jsonb, '""'::jsonb))
                            THEN 'ready' ELSE 'pending' END) ORDER BY i), '[]')
                        FROM jsonb_array_elements(coalesce(shipments, '[]')) WITH ORDINALITY AS x(sh, i))
                    WHERE number = change->>'number';
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

-- CREATE OR REPLACE reset its settings: its search_path again.
ALTER FUNCTION apply_view_changes(jsonb) SET search_path FROM CURRENT;
