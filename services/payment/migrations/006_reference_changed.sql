-- Reference data cached by every process (shared/reference_cache.py): a change of these tables,
-- by a loader, an operator's tool or plain SQL, drops the cached answers read from them.
CREATE TRIGGER payment_methods_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON payment_methods
    FOR EACH STATEMENT EXECUTE FUNCTION reference_changed();
