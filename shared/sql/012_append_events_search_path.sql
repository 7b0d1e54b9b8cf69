-- A service's append may now run on another service's connection (the order view projected
-- in the transaction of a cart, shipping or payment command, when they share a process:
-- shared/eventstore.py `inline`): the function names its own schema's tables, whatever the
-- caller's search_path. Applied with search_path set to the schema, so FROM CURRENT is it.
ALTER FUNCTION append_events(uuid[], text[], text[], int[], text[], int[], timestamptz[], text[], text[],
                             jsonb[], text, text, bytea[], text[], text, text)
    SET search_path FROM CURRENT;
