-- Reference data cached by every process (shared/reference_cache.py): a change of these tables,
-- by a loader, an operator's tool or plain SQL, drops the cached answers read from them.
CREATE TRIGGER variants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON variants
    FOR EACH STATEMENT EXECUTE FUNCTION reference_changed();
CREATE TRIGGER prices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION reference_changed();
