-- The coordinator's tick must not cost O(queued tasks): the dispatch order
-- comes from an index (no sort of every queued task), and the queue-timeout
-- check only visits queued tasks that have a queue timeout.
CREATE INDEX IF NOT EXISTS coord_tasks_dispatch
    ON coord_tasks (priority DESC, queued_at, task_id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS coord_tasks_queue_deadline
    ON coord_tasks (queued_at) WHERE status = 'queued' AND queue_timeout_secs IS NOT NULL;
