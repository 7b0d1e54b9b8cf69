-- The order view's changes applied by statements planned once per connection (issue #26: CPU).
--
-- apply_view_changes (migrations 012 and 013) built each row's INSERT or UPDATE as text from
-- the change's keys, checked them against the catalog and ran it with EXECUTE: parsed, planned
-- and executed anew ~25 times a checkout, a third of PostgreSQL's CPU. Here the writers are
-- static: `define_order_view_writers` writes, from the catalog, one function per kind of write
-- whose statement names every column of its table and takes the change's value where the change
-- has the key (`fields ? 'col'`), the row's own (UPDATE) or the column's default (INSERT)
-- otherwise. PL/pgSQL plans each once per connection.
--
-- A key that is not a column still fails the statement (undefined_column), as does a change of
-- an order's number. A migration that adds or drops a column of order_view or order_line_items
-- must end with `SELECT define_order_view_writers();`: until it does, the new column is
-- refused by name, loudly (tests/platform/test_static_view_writers.py sets every column).

-- One element of a list column changed in place, as migration 012's `patch` did with format(%I):
-- `merge` gives the elements whose key has the value `with`'s fields; `append` adds `with` unless
-- an element has that key's value. PL/pgSQL, so it plans its queries once per connection (a SQL
-- function with a FROM is not inlined, and would be planned again at every call). Its variables
-- are named apart from `value`, the column of jsonb_array_elements.
CREATE FUNCTION list_patched(list jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    key_name text := patch->>'key';
    key_value jsonb := patch->'value';
BEGIN
    IF patch->>'how' = 'merge' THEN
        RETURN (SELECT coalesce(jsonb_agg(CASE WHEN x.e->key_name = key_value THEN x.e || (patch->'with') ELSE x.e END
                                          ORDER BY x.i), '[]')
                FROM jsonb_array_elements(coalesce(list, '[]')) WITH ORDINALITY AS x(e, i));
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(list, '[]')) AS x(e) WHERE x.e->key_name = key_value) THEN
        RETURN list;
    END IF;
    RETURN coalesce(list, '[]') || jsonb_build_array(patch->'with');
END
$$;

CREATE FUNCTION define_order_view_writers() RETURNS void
LANGUAGE plpgsql AS $generator$
DECLARE
    view_columns text[] := ARRAY(SELECT a.attname::text FROM pg_attribute a
                                 WHERE a.attrelid = 'order_view'::regclass AND a.attnum > 0 AND NOT a.attisdropped
                                 ORDER BY a.attnum);
    line_columns text[] := ARRAY(SELECT a.attname::text FROM pg_attribute a
                                 WHERE a.attrelid = 'order_line_items'::regclass AND a.attnum > 0
                                 AND NOT a.attisdropped ORDER BY a.attnum);
    updatable text[] := array_remove(view_columns, 'number');
    assignments text;
BEGIN
    -- Each column: the change's value when it has the key, else the row's own. updated_at also
    -- moves forward to the events' time (`stamp`) when the change carries one.
    assignments := (SELECT string_agg(CASE WHEN c = 'updated_at'
        THEN 'updated_at = CASE WHEN fields ? ''updated_at'' THEN r.updated_at'
             ' WHEN stamp IS NOT NULL THEN greatest(v.updated_at, stamp) ELSE v.updated_at END'
        ELSE format('%1$I = CASE WHEN fields ? %2$L THEN r.%1$I ELSE v.%1$I END', c, c) END, ', ')
        FROM unnest(updatable) AS c);
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION update_order_view_row(target text, fields jsonb, stamp timestamptz,
                                                         below_version int) RETURNS void
        LANGUAGE plpgsql AS $body$
        DECLARE
            unknown text[] := ARRAY(SELECT k FROM jsonb_object_keys(fields) AS k WHERE k <> ALL (%1$L::text[]));
        BEGIN
            IF 'number' = ANY (unknown) THEN
                RAISE EXCEPTION 'an order''s number does not change';
            ELSIF cardinality(unknown) > 0 THEN
                RAISE EXCEPTION 'not a column of order_view: %%', unknown USING ERRCODE = 'undefined_column';
            END IF;
            IF fields <> '{}' OR stamp IS NOT NULL THEN
                UPDATE order_view AS v SET %2$s FROM jsonb_populate_record(NULL::order_view, fields) AS r
                WHERE v.number = target AND (below_version IS NULL OR v.cart_version < below_version);
            END IF;
        END
        $body$ SET search_path FROM CURRENT $f$, updatable, assignments);
    EXECUTE order_view_inserter('insert_order_view_row', 'order_view', view_columns, 'number');
    EXECUTE order_view_inserter('insert_order_line_row', 'order_line_items', line_columns, 'id');
END
$generator$;

-- The CREATE FUNCTION of an insert of one row of `tab` from a change's keys: a key that is
-- not a column fails it; a column without a key takes its default (NULL if it has none).
CREATE FUNCTION order_view_inserter(name text, tab regclass, columns text[], conflict_key text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format($f$
        CREATE OR REPLACE FUNCTION %1$I(fields jsonb) RETURNS void
        LANGUAGE plpgsql AS $body$
        DECLARE
            unknown text[] := ARRAY(SELECT k FROM jsonb_object_keys(fields) AS k WHERE k <> ALL (%2$L::text[]));
        BEGIN
            IF cardinality(unknown) > 0 THEN
                RAISE EXCEPTION 'not a column of %3$s: %%', unknown USING ERRCODE = 'undefined_column';
            END IF;
            INSERT INTO %3$s (%4$s) SELECT %5$s FROM jsonb_populate_record(NULL::%3$s, fields) AS r
            ON CONFLICT (%6$I) DO NOTHING;
        END
        $body$ SET search_path FROM CURRENT $f$,
        name, columns, tab,
        (SELECT string_agg(format('%I', c), ', ' ORDER BY n) FROM unnest(columns) WITH ORDINALITY AS x(c, n)),
        (SELECT string_agg(format('CASE WHEN fields ? %L THEN r.%I ELSE %s END', c, c,
                                  coalesce((SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                                            JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                                            WHERE d.adrelid = tab AND a.attname = c), 'NULL')), ', ' ORDER BY n)
         FROM unnest(columns) WITH ORDINALITY AS x(c, n)),
        conflict_key)
$$;

-- Applied with search_path set to the schema: the functions name its tables, whoever calls
-- (and the writers they define take the same search_path).
ALTER FUNCTION define_order_view_writers() SET search_path FROM CURRENT;
ALTER FUNCTION order_view_inserter(text, regclass, text[], text) SET search_path FROM CURRENT;
SELECT define_order_view_writers();

-- Migration 013's apply_view_changes, its writes now through the static writers above.
CREATE OR REPLACE FUNCTION apply_view_changes(view_changes jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    change jsonb;
    patch jsonb;
    current_state text;
BEGIN
    FOR change IN SELECT c FROM jsonb_array_elements(view_changes) AS c LOOP
        CASE change->>'op'
        WHEN 'create' THEN  -- as SqlOrderView.create: a row already there is kept
            PERFORM insert_order_view_row(change->'row');
        WHEN 'update' THEN  -- as SqlOrderView._update_row: a stamp rides on it, the notice follows it
            IF change ? 'patch' THEN  -- one element of a list column changed in place: no read first
                patch := change->'patch';
                IF NOT patch->>'column' = ANY (ARRAY['payments', 'shipments']) THEN
                    RAISE EXCEPTION 'not a list of the order view: %', patch->>'column';
                END IF;
                IF patch->>'how' IN ('merge', 'append') THEN  -- list_patched, on the patch's column
                    UPDATE order_view SET
                        payments = CASE WHEN patch->>'column' = 'payments' THEN list_patched(payments, patch)
                                        ELSE payments END,
                        shipments = CASE WHEN patch->>'column' = 'shipments' THEN list_patched(shipments, patch)
                                         ELSE shipments END
                    WHERE number = change->>'number';
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
            PERFORM update_order_view_row(change->>'number', coalesce(change->'set', '{}'),
                                          (change->>'stamp')::timestamptz, (change->>'below_cart_version')::int);
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
            PERFORM insert_order_line_row(change->'line');
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
