-- A saga instance's version (shared/saga_runner.py): every change of its row moves it on, the
-- runner's and an operator's alike (a trigger, so no writer can forget it). The drive that
-- holds an instance as it last wrote it records a participant's answer in one statement,
-- `record_saga_answer`: the answer's processed-events record and the instance's new state,
-- premised on the row still being at that version; when it is not (an operator's abort, the
-- sweep, the answer from Kafka), the statement fails with SQLSTATE TS002 and nothing is
-- stored: the runner records the answer the long way (lock the row, decide, update).
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION saga_version_moves_on() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS saga_version_moves_on ON sagas;
CREATE TRIGGER saga_version_moves_on BEFORE UPDATE ON sagas FOR EACH ROW EXECUTE FUNCTION saga_version_moves_on();

-- NULL: the answer was recorded before (nothing changed); else the instance's new version.
-- `state`: the columns the runner changes (saga_runner._STATE), as JSON.
CREATE OR REPLACE FUNCTION record_saga_answer(consumer text, event_id uuid, saga_id text, expected_version integer,
                                              state jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    moved_to integer;
BEGIN
    INSERT INTO processed_events (consumer, event_id) VALUES (record_saga_answer.consumer, record_saga_answer.event_id)
        ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE sagas AS s SET data = r.data, step = r.step, status = r.status, invoked = r.invoked, pending = r.pending,
                          failure = r.failure, deadline_at = r.deadline_at, attempts = r.attempts,
                          retry_at = r.retry_at, cause_event_id = r.cause_event_id, call_attempts = r.call_attempts,
                          retries = r.retries, updated_at = now(),
                          ended_at = CASE WHEN r.status IN ('completed', 'failed') THEN now() END
      FROM jsonb_populate_record(NULL::sagas, state) AS r
     WHERE s.id = saga_id AND s.version = expected_version
    RETURNING s.version INTO moved_to;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'saga % moved past version %', saga_id, expected_version USING ERRCODE = 'TS002';
    END IF;
    RETURN moved_to;
END
$$;
-- Applied with search_path set to the schema: the functions name its tables, whoever calls.
ALTER FUNCTION saga_version_moves_on() SET search_path FROM CURRENT;
ALTER FUNCTION record_saga_answer(text, uuid, text, integer, jsonb) SET search_path FROM CURRENT;
