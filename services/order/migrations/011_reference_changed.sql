-- Reference data cached by every process (shared/reference_cache.py): a change of these tables,
-- by a loader, an operator's tool or plain SQL, drops the cached answers read from them.
CREATE TRIGGER countries_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON countries
    FOR EACH STATEMENT EXECUTE FUNCTION reference_changed();
CREATE TRIGGER states_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON states
    FOR EACH STATEMENT EXECUTE FUNCTION reference_changed();
