-- Reference data cached by every process (shared/reference_cache.py): a change of these tables,
-- by a loader, an operator's tool or plain SQL, drops the cached answers read from them.
-- Stock counts (stock_items) are not reference data: they change with every checkout and are
-- never cached.
CREATE TRIGGER stock_locations_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON stock_locations
    FOR EACH STATEMENT EXECUTE FUNCTION reference_changed();
CREATE TRIGGER shipping_methods_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON shipping_methods
    FOR EACH STATEMENT EXECUTE FUNCTION reference_changed();
CREATE TRIGGER zones_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON zones
    FOR EACH STATEMENT EXECUTE FUNCTION reference_changed();
