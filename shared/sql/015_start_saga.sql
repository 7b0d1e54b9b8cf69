-- A saga instance's row as the runner starts it (shared/saga_runner.py `started`), from its
-- columns as JSON (`saga_runner._row_json`): one definition of how an instance is stored,
-- whether its own statement inserts it or a host's write starts it in the statement that
-- appends the event starting it (the order's CompletionRequested:
-- services/order/migrations/014_start_completion.sql), so that the event, the host's view
-- and the instance are stored together or not at all, without a BEGIN/COMMIT.
CREATE OR REPLACE FUNCTION start_saga(instance jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sagas (id, saga, key, correlation_id, data, step, status, invoked, pending, failure, deadline_at,
                       attempts, abort_requested, force_requested, started_by, retry_at, cause_event_id,
                       call_attempts, retries, version, started_at, updated_at)
    SELECT r.id, r.saga, r.key, r.correlation_id, r.data, r.step, r.status, r.invoked, r.pending, r.failure,
           r.deadline_at, r.attempts, r.abort_requested, r.force_requested, r.started_by, r.retry_at,
           r.cause_event_id, r.call_attempts, r.retries, r.version, now(), now()
      FROM jsonb_populate_record(NULL::sagas, instance) AS r;
END
$$;
-- Applied with search_path set to the schema: the function names its table, whoever calls.
ALTER FUNCTION start_saga(jsonb) SET search_path FROM CURRENT;
