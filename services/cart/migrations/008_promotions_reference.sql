-- Promotions are reference data too (shared/reference_cache.py): their definitions change only by
-- a loader, an operator or plain SQL (their uses are counted in promotion_uses, never here), so
-- finding a coupon by its code is answered from each process's cache until one of them changes.
CREATE TRIGGER promotions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON promotions
    FOR EACH STATEMENT EXECUTE FUNCTION reference_changed();
