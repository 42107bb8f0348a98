-- The coordinator reacts to every batch of events by looking for tasks
-- waiting on dependencies or on their schedule. Through `coord_tasks_status`
-- that lookup visited every task that was ever 'submitted': a task queued
-- in a later batch than its submission leaves a dead 'submitted' entry in
-- that index, and bitmap scans (unlike plain index scans) never mark such
-- entries dead, so until the next vacuum each lookup read them all again
-- (measured: 0.81 ms a call for no rows, 1,471 calls in a 30-second run at
-- 1,000 tasks/s; 0.03 ms with these). A task without dependencies never
-- enters the first index, and only scheduled tasks the second.
CREATE INDEX IF NOT EXISTS coord_tasks_awaiting_dependencies
    ON coord_tasks (task_id) WHERE status = 'submitted' AND cardinality(depends_on) > 0;
CREATE INDEX IF NOT EXISTS coord_tasks_scheduled
    ON coord_tasks (due_at) WHERE status = 'scheduled';
