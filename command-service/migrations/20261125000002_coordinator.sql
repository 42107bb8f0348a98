-- The coordinator's own state: agent liveness (heartbeats are not events) and
-- its view of tasks and agents, folded from the event stream with a checkpoint.

-- Liveness lives in Postgres rather than a NATS KV bucket: the coordinator
-- already decides from Postgres, so the heartbeat it compares against and the
-- view it decides on are read in one place, and a heartbeat survives a NATS
-- restart.
CREATE TABLE IF NOT EXISTS agent_liveness
(
    agent_id     uuid PRIMARY KEY,
    last_seen_at timestamptz NOT NULL,
    load         int
);

CREATE TABLE IF NOT EXISTS coordinator_checkpoint
(
    id              int PRIMARY KEY CHECK (id = 1),
    stream_sequence bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS coord_agents
(
    agent_id             uuid PRIMARY KEY,
    version              bigint      NOT NULL,
    status               text        NOT NULL,
    capabilities         text[]      NOT NULL,
    max_concurrent_tasks int         NOT NULL,
    -- When it entered its current status (the liveness window starts there).
    status_since         timestamptz
);

CREATE TABLE IF NOT EXISTS coord_tasks
(
    task_id                uuid PRIMARY KEY,
    version                bigint      NOT NULL,
    status                 text        NOT NULL,
    task_type              text        NOT NULL,
    input                  jsonb       NOT NULL,
    priority               smallint    NOT NULL,
    required_capabilities  text[]      NOT NULL,
    target_agent_id        uuid,
    agent_id               uuid,
    -- The agent of the previous attempt, avoided on retry where possible.
    last_agent_id          uuid,
    attempt                int         NOT NULL,
    max_retries            int         NOT NULL,
    retryable              boolean     NOT NULL DEFAULT false,
    depends_on             uuid[]      NOT NULL,
    correlation_id         text        NOT NULL,
    queue_timeout_secs     bigint,
    execution_timeout_secs bigint,
    due_at                 timestamptz,
    queued_at              timestamptz,
    lease_expires_at       timestamptz,
    started_at             timestamptz
);
CREATE INDEX IF NOT EXISTS coord_tasks_status ON coord_tasks (status);
CREATE INDEX IF NOT EXISTS coord_tasks_agent ON coord_tasks (agent_id) WHERE status IN ('assigned', 'running');
