//! The coordinator's view of tasks and agents, folded from the event stream
//! into `coord_tasks` / `coord_agents` with a checkpoint, in one transaction
//! per batch. A row's `version` guards against applying an event twice
//! (including events the coordinator already wrote through after its own
//! commands).

use chrono::{DateTime, Utc};
use schemas::decode::DomainEvent;
use schemas::events::{AgentEvent, TaskEvent, TaskSubmitted, TimeoutPhase};
use schemas::EventEnvelope;
use sqlx::PgConnection;
use uuid::Uuid;

/// What an applied event asks the coordinator to tell an agent.
#[derive(Debug, Clone)]
pub enum Notice {
    Assigned {
        agent_id: Uuid,
        task_id: Uuid,
    },
    Cancelled {
        agent_id: Uuid,
        task_id: Uuid,
        reason: Option<String>,
    },
}

/// The last stream position the view holds.
pub async fn checkpoint(conn: &mut PgConnection) -> sqlx::Result<u64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT stream_sequence FROM coordinator_checkpoint WHERE id = 1")
            .fetch_optional(conn)
            .await?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// Moves the checkpoint, in the transaction that applied the events up to
/// it, and lets that transaction commit without waiting for the WAL flush
/// (`SET LOCAL synchronous_commit = off` in the same statement, one round
/// trip less): the view and its checkpoint are derived from the stream, so a
/// commit lost in a Postgres crash is re-read from the stream.
pub async fn set_checkpoint(conn: &mut PgConnection, seq: u64) -> sqlx::Result<()> {
    sqlx::query(
        "WITH saved AS (INSERT INTO coordinator_checkpoint (id, stream_sequence) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET stream_sequence = EXCLUDED.stream_sequence RETURNING 1) \
         SELECT set_config('synchronous_commit', 'off', true) FROM saved",
    )
    .bind(seq as i64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies `TaskQueued` events of distinct tasks with one statement (the one
/// place a queueing is written; [`apply`] sends its one here). Queueing tells
/// nobody anything. Events whose aggregate id is not a UUID are skipped, as
/// `apply` skips them.
pub async fn apply_queued(
    conn: &mut PgConnection,
    queued: &[(&EventEnvelope, u32)],
) -> sqlx::Result<()> {
    let mut ids = Vec::with_capacity(queued.len());
    let mut versions = Vec::with_capacity(queued.len());
    let mut times = Vec::with_capacity(queued.len());
    let mut attempts = Vec::with_capacity(queued.len());
    for (envelope, attempt) in queued {
        let Ok(id) = Uuid::parse_str(&envelope.aggregate_id) else {
            continue;
        };
        ids.push(id);
        versions.push(envelope.sequence);
        times.push(envelope.occurred_at);
        attempts.push(*attempt as i32);
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE coord_tasks c SET version = u.version, status = 'queued', queued_at = u.at, \
             attempt = u.attempt, agent_id = NULL, lease_expires_at = NULL \
         FROM UNNEST($1::uuid[], $2::bigint[], $3::timestamptz[], $4::int[]) AS u(id, version, at, attempt) \
         WHERE c.task_id = u.id AND c.version < u.version",
    )
    .bind(&ids)
    .bind(&versions)
    .bind(&times)
    .bind(&attempts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies one event; returns what to tell an agent, if anything.
pub async fn apply(
    conn: &mut PgConnection,
    envelope: &EventEnvelope,
    event: &DomainEvent,
) -> sqlx::Result<Option<Notice>> {
    let Ok(id) = Uuid::parse_str(&envelope.aggregate_id) else {
        return Ok(None);
    };
    let seq = envelope.sequence;
    let at = envelope.occurred_at;
    match event {
        DomainEvent::Agent(e) => {
            apply_agent(conn, id, seq, at, e).await?;
            Ok(None)
        }
        DomainEvent::Task(e) => apply_task(conn, id, envelope, seq, at, e).await,
    }
}

/// A submitted task for [`insert_submitted`], with the event that queued it
/// when that event came right after it in the same batch.
pub struct Submitted<'a> {
    pub envelope: &'a EventEnvelope,
    pub task: &'a TaskSubmitted,
    /// The `TaskQueued` event (`sequence + 1`) folded into the insert.
    pub queued: Option<(&'a EventEnvelope, &'a DomainEvent)>,
}

impl Submitted<'_> {
    /// The row as `apply` would leave it after the submission (and the
    /// queueing), in `coord_tasks`' column names.
    fn row(&self) -> Option<serde_json::Value> {
        let id = Uuid::parse_str(&self.envelope.aggregate_id).ok()?;
        let s = self.task;
        let mut row = serde_json::json!({
            "task_id": id,
            "version": self.envelope.sequence,
            "status": "submitted",
            "task_type": s.task_type,
            "input": s.input,
            "priority": s.priority,
            "required_capabilities": s.required_capabilities,
            "target_agent_id": s.target_agent_id,
            "attempt": 1,
            "max_retries": s.max_retries,
            "depends_on": s.depends_on,
            "correlation_id": self.envelope.metadata.correlation_id,
            "queue_timeout_secs": s.queue_timeout_secs,
            "execution_timeout_secs": s.execution_timeout_secs,
            "queued_at": null,
        });
        if let Some((queued, DomainEvent::Task(TaskEvent::TaskQueued(q)))) = self.queued {
            row["version"] = queued.sequence.into();
            row["status"] = "queued".into();
            // To the microsecond as a bound timestamp is (truncated; Postgres
            // would round the JSON text's nanoseconds), so that the row equals
            // the one `apply` writes.
            row["queued_at"] =
                serde_json::to_value(chrono::SubsecRound::trunc_subsecs(queued.occurred_at, 6))
                    .ok()?;
            row["attempt"] = q.attempt.into();
        }
        Some(row)
    }
}

/// Inserts submitted tasks with one statement, as `apply` would one by one
/// (a task already in the view is left alone). Returns the queueing events
/// of the tasks that were already there, which still need `apply`.
pub async fn insert_submitted<'a>(
    conn: &mut PgConnection,
    tasks: &[Submitted<'a>],
) -> sqlx::Result<Vec<(&'a EventEnvelope, &'a DomainEvent)>> {
    let rows: Vec<serde_json::Value> = tasks.iter().filter_map(Submitted::row).collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO coord_tasks (task_id, version, status, task_type, input, priority, \
             required_capabilities, target_agent_id, attempt, max_retries, depends_on, correlation_id, \
             queue_timeout_secs, execution_timeout_secs, queued_at) \
         SELECT task_id, version, status, task_type, input, priority, required_capabilities, \
             target_agent_id, attempt, max_retries, depends_on, correlation_id, \
             queue_timeout_secs, execution_timeout_secs, queued_at \
         FROM jsonb_populate_recordset(NULL::coord_tasks, $1) \
         ON CONFLICT (task_id) DO NOTHING RETURNING task_id",
    )
    .bind(serde_json::Value::Array(rows))
    .fetch_all(conn)
    .await?;
    let inserted: std::collections::HashSet<String> =
        inserted.into_iter().map(|id| id.to_string()).collect();
    Ok(tasks
        .iter()
        .filter(|t| !inserted.contains(&t.envelope.aggregate_id))
        .filter_map(|t| t.queued)
        .collect())
}

async fn apply_agent(
    conn: &mut PgConnection,
    id: Uuid,
    seq: i64,
    at: DateTime<Utc>,
    e: &AgentEvent,
) -> sqlx::Result<()> {
    if let AgentEvent::AgentCreated(c) = e {
        sqlx::query(
            "INSERT INTO coord_agents (agent_id, version, status, capabilities, max_concurrent_tasks) \
             VALUES ($1, $2, 'inactive', $3, $4) ON CONFLICT (agent_id) DO NOTHING",
        )
        .bind(id)
        .bind(seq)
        .bind(&c.capabilities)
        .bind(c.max_concurrent_tasks as i32)
        .execute(conn)
        .await?;
        return Ok(());
    }
    let status = match e {
        AgentEvent::AgentActivated(_) | AgentEvent::AgentRecovered(_) => Some("active"),
        AgentEvent::AgentDeactivated(_) => Some("inactive"),
        AgentEvent::AgentMarkedUnhealthy(_) => Some("unhealthy"),
        AgentEvent::AgentRetired(_) => Some("retired"),
        AgentEvent::AgentUpdated(_) | AgentEvent::AgentCreated(_) => None,
    };
    let (caps, max) = match e {
        AgentEvent::AgentUpdated(u) => (
            u.capabilities.clone(),
            u.max_concurrent_tasks.map(|m| m as i32),
        ),
        _ => (None, None),
    };
    sqlx::query(
        "UPDATE coord_agents SET version = $2, status = coalesce($3, status), \
             capabilities = coalesce($4, capabilities), max_concurrent_tasks = coalesce($5, max_concurrent_tasks), \
             status_since = CASE WHEN $3::text IS NULL THEN status_since ELSE $6 END \
         WHERE agent_id = $1 AND version < $2",
    )
    .bind(id)
    .bind(seq)
    .bind(status)
    .bind(caps)
    .bind(max)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn apply_task(
    conn: &mut PgConnection,
    id: Uuid,
    envelope: &EventEnvelope,
    seq: i64,
    at: DateTime<Utc>,
    e: &TaskEvent,
) -> sqlx::Result<Option<Notice>> {
    if let TaskEvent::TaskQueued(q) = e {
        apply_queued(conn, &[(envelope, q.attempt)]).await?;
        return Ok(None);
    }
    if let TaskEvent::TaskSubmitted(s) = e {
        sqlx::query(
            "INSERT INTO coord_tasks (task_id, version, status, task_type, input, priority, \
                 required_capabilities, target_agent_id, attempt, max_retries, depends_on, correlation_id, \
                 queue_timeout_secs, execution_timeout_secs) \
             VALUES ($1, $2, 'submitted', $3, $4, $5, $6, $7, 1, $8, $9, $10, $11, $12) \
             ON CONFLICT (task_id) DO NOTHING",
        )
        .bind(id)
        .bind(seq)
        .bind(&s.task_type)
        .bind(&s.input)
        .bind(i16::from(s.priority))
        .bind(&s.required_capabilities)
        .bind(s.target_agent_id)
        .bind(s.max_retries as i32)
        .bind(&s.depends_on)
        .bind(&envelope.metadata.correlation_id)
        .bind(s.queue_timeout_secs.map(|v| v as i64))
        .bind(s.execution_timeout_secs.map(|v| v as i64))
        .execute(conn)
        .await?;
        return Ok(None);
    }
    // (status, assignments): each arm sets the columns the event changes.
    let (sql, notice): (&str, Option<Notice>) = match e {
        // Written above.
        TaskEvent::TaskSubmitted(_) | TaskEvent::TaskQueued(_) => return Ok(None),
        TaskEvent::TaskScheduled(_) => ("status = 'scheduled', due_at = $3", None),
        TaskEvent::TaskAssigned(a) => (
            "status = 'assigned', agent_id = $5, lease_expires_at = $3, attempt = $4",
            Some(Notice::Assigned {
                agent_id: a.agent_id,
                task_id: id,
            }),
        ),
        TaskEvent::TaskStarted(_) => ("status = 'running', started_at = $3", None),
        TaskEvent::TaskProgressReported(_) => ("status = status", None),
        TaskEvent::TaskSucceeded(_) => ("status = 'succeeded'", None),
        TaskEvent::TaskFailed(_) => (
            "status = 'failed', retryable = $6, last_agent_id = coalesce(agent_id, last_agent_id), agent_id = NULL",
            None,
        ),
        TaskEvent::TaskRetryScheduled(_) => ("status = 'scheduled', due_at = $3, attempt = $4", None),
        TaskEvent::TaskCancelled(c) => (
            "status = 'cancelled', agent_id = NULL",
            c.agent_id.map(|agent_id| Notice::Cancelled {
                agent_id,
                task_id: id,
                reason: c.reason.clone(),
            }),
        ),
        TaskEvent::TaskTimedOut(_) => (
            "status = 'timed_out', retryable = $6, last_agent_id = coalesce(agent_id, last_agent_id), agent_id = NULL",
            None,
        ),
    };
    // $3: the event's time or deadline; $4: attempt; $5: agent; $6: retryable.
    let (time, attempt, agent, retryable) = match e {
        TaskEvent::TaskScheduled(s) => (Some(s.schedule_at), None, None, None),
        TaskEvent::TaskAssigned(a) => (
            Some(a.lease_expires_at),
            Some(a.attempt),
            Some(a.agent_id),
            None,
        ),
        TaskEvent::TaskStarted(_) => (Some(at), None, None, None),
        TaskEvent::TaskFailed(f) => (None, None, None, Some(f.retryable)),
        TaskEvent::TaskRetryScheduled(r) => (Some(r.not_before), Some(r.attempt), None, None),
        TaskEvent::TaskTimedOut(t) => (None, None, None, Some(t.phase != TimeoutPhase::Queue)),
        _ => (None, None, None, None),
    };
    // Every parameter is named in the statement (the no-op conditions) so
    // that Postgres can type the ones a given arm does not use.
    let updated = sqlx::query(&format!(
        "UPDATE coord_tasks SET version = $2, {sql} WHERE task_id = $1 AND version < $2 \
         AND ($3::timestamptz IS NULL OR true) AND ($4::int IS NULL OR true) \
         AND ($5::uuid IS NULL OR true) AND ($6::boolean IS NULL OR true)"
    ))
    .bind(id)
    .bind(seq)
    .bind(time)
    .bind(attempt.map(|a| a as i32))
    .bind(agent)
    .bind(retryable)
    .execute(conn)
    .await?;
    // An event already written through by the coordinator (or a duplicate)
    // changes nothing and tells nobody anything twice.
    Ok(notice.filter(|_| updated.rows_affected() == 1))
}
