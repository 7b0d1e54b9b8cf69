-- The completion saga calls its participants (shared/saga_runner.py): a step whose reply was
-- not recorded is called again at `retry_at` (doubling up to a cap, until its deadline);
-- `cause_event_id` is the event that made the saga take its current step (the cause of what
-- the participant answers); `call_attempts` counts the calls of the current step that failed
-- (not an outage), `retries` its calls again. Sagas in flight at the upgrade continue by
-- call: each participant answers a request id once.
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS retry_at timestamptz;
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS cause_event_id text;
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS call_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS retries integer NOT NULL DEFAULT 0;
UPDATE sagas SET retry_at = now(), cause_event_id = coalesce(cause_event_id, started_by)
 WHERE status IN ('running', 'compensating');
CREATE INDEX IF NOT EXISTS sagas_retry ON sagas (retry_at) WHERE status IN ('running', 'compensating');
