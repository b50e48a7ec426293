-- A redrive can run the event on a chosen version instead of the active one.
ALTER TABLE dlq_actions ADD COLUMN version INTEGER;
