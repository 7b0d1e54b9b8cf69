-- Reference data cached per process (shared/reference_cache.py) is dropped in every process
-- when it changes: a service's reference tables carry a statement-level trigger (in its own
-- migrations) running this, which announces `<schema>.<table>` on `tillstream_reference`
-- when the change commits (nothing if it rolls back; one notification per table and
-- transaction, however many statements).
CREATE FUNCTION reference_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tillstream_reference', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
    RETURN NULL;
END
$$;
