-- What one request caused, over the projected history.
CREATE INDEX IF NOT EXISTS task_events_correlation ON task_events (correlation_id, occurred_at);
