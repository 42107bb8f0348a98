-- The projectors' own schema: runtime bookkeeping and the Postgres read models.
-- The query service only reads these tables.

-- Last stream sequence each projection applied, written in the same
-- transaction as the read-model change it covers.
CREATE TABLE IF NOT EXISTS projector_checkpoints
(
    projection      text PRIMARY KEY,
    stream_sequence bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Events a projection could not apply, and the later events of the same
-- aggregate parked behind them so that order per aggregate is never broken.
CREATE TABLE IF NOT EXISTS dead_letters
(
    id              bigserial PRIMARY KEY,
    projection      text        NOT NULL,
    stream_sequence bigint      NOT NULL,
    subject         text        NOT NULL,
    aggregate_type  text,
    aggregate_id    text,
    sequence        bigint,
    event_type      text,
    raw             bytea       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}',
    error           text        NOT NULL,
    attempts        int         NOT NULL,
    -- The dead letter this one waits behind; null for the one that failed.
    blocked_by      bigint REFERENCES dead_letters (id),
    status          text        NOT NULL DEFAULT 'parked'
        CHECK (status IN ('parked', 'redriven', 'discarded')),
    parked_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    resolution      text,
    UNIQUE (projection, stream_sequence)
);
CREATE INDEX IF NOT EXISTS dead_letters_parked
    ON dead_letters (projection, aggregate_type, aggregate_id) WHERE status = 'parked';

CREATE TABLE IF NOT EXISTS agents
(
    id                    uuid PRIMARY KEY,
    -- Sequence of the last event applied: the aggregate version.
    version               bigint      NOT NULL,
    name                  text        NOT NULL,
    agent_type            text        NOT NULL,
    status                text        NOT NULL,
    capabilities          text[]      NOT NULL,
    config                jsonb       NOT NULL,
    max_concurrent_tasks  int         NOT NULL,
    health_reason         text,
    last_health_change_at timestamptz,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    retired_at            timestamptz
);
CREATE INDEX IF NOT EXISTS agents_type_status ON agents (agent_type, status);
CREATE INDEX IF NOT EXISTS agents_capabilities ON agents USING gin (capabilities);

CREATE TABLE IF NOT EXISTS tasks
(
    id                     uuid PRIMARY KEY,
    version                bigint      NOT NULL,
    task_type              text        NOT NULL,
    status                 text        NOT NULL,
    priority               smallint    NOT NULL,
    required_capabilities  text[]      NOT NULL,
    target_agent_id        uuid,
    agent_id               uuid,
    input                  jsonb       NOT NULL,
    output                 jsonb,
    error                  text,
    progress               smallint,
    progress_message       text,
    attempt                int         NOT NULL,
    max_retries            int         NOT NULL,
    -- One entry per failed or timed-out attempt: {attempt, agent_id, error, at}.
    failures               jsonb       NOT NULL DEFAULT '[]',
    schedule_at            timestamptz,
    queue_timeout_secs     bigint,
    execution_timeout_secs bigint,
    idempotency_key        text,
    parent_task_id         uuid,
    depends_on             uuid[]      NOT NULL,
    submitted_by           text        NOT NULL,
    correlation_id         text        NOT NULL,
    cancel_reason          text,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    queued_at              timestamptz,
    assigned_at            timestamptz,
    lease_expires_at       timestamptz,
    started_at             timestamptz,
    finished_at            timestamptz,
    search                 tsvector GENERATED ALWAYS AS (
        to_tsvector('english', replace(task_type, '.', ' ')) ||
        jsonb_to_tsvector('english', input, '["string"]')) STORED
);
CREATE INDEX IF NOT EXISTS tasks_type_status ON tasks (task_type, status);
CREATE INDEX IF NOT EXISTS tasks_status_created ON tasks (status, created_at);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at, id);
CREATE INDEX IF NOT EXISTS tasks_agent_status ON tasks (agent_id, status);
CREATE INDEX IF NOT EXISTS tasks_parent ON tasks (parent_task_id);
CREATE INDEX IF NOT EXISTS tasks_search ON tasks USING gin (search);

-- Every task event, for the history endpoints (per task, and per agent
-- through agent_id).
CREATE TABLE IF NOT EXISTS task_events
(
    task_id         uuid        NOT NULL,
    sequence        bigint      NOT NULL,
    stream_sequence bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    actor           text        NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text        NOT NULL,
    request_id      text        NOT NULL,
    agent_id        uuid,
    payload         jsonb       NOT NULL,
    PRIMARY KEY (task_id, sequence)
);
CREATE INDEX IF NOT EXISTS task_events_agent ON task_events (agent_id, occurred_at) WHERE agent_id IS NOT NULL;

-- Counts and durations by type and status, always consistent with `tasks`.
CREATE OR REPLACE VIEW task_stats AS
SELECT task_type,
       status,
       count(*)                                                            AS count,
       avg(extract(epoch FROM (finished_at - started_at))) FILTER (WHERE finished_at IS NOT NULL AND started_at IS NOT NULL) AS avg_run_secs,
       max(extract(epoch FROM (finished_at - started_at))) FILTER (WHERE finished_at IS NOT NULL AND started_at IS NOT NULL) AS max_run_secs,
       avg(extract(epoch FROM (coalesce(assigned_at, finished_at) - queued_at))) FILTER (WHERE queued_at IS NOT NULL) AS avg_wait_secs
FROM tasks
GROUP BY task_type, status;
