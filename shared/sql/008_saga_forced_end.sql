-- An operator's forced end of a compensating saga (`tillstream saga abort --force`): the
-- next sweep fails it at once, naming the compensations left unanswered (shared/saga.py).
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS force_requested boolean NOT NULL DEFAULT false;
