-- The event that started a saga (the order's CompletionRequested): what a missed deadline
-- or an operator's abort makes it send is caused by it (shared/saga.py `sweep`). Sagas
-- started before are given theirs from the host's stream.
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS started_by text;
UPDATE sagas AS s SET started_by = e.event_id::text FROM events AS e
 WHERE s.started_by IS NULL AND e.aggregate_type = 'Order' AND e.aggregate_id = s.key
   AND e.type = 'order.CompletionRequested' AND e.payload->>'request_id' = s.id;
