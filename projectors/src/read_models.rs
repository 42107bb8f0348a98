//! The Postgres read models `agents`, `tasks` and `task_events` (and the
//! `task_stats` view over `tasks`), kept by the `read_models` projection.
//!
//! Each row carries its aggregate's `version` (last applied sequence). An
//! event is applied only if it is exactly the next one: an older or equal
//! sequence is a duplicate and skipped, a gap is refused (and so parked),
//! which keeps every row equal to a fold of its aggregate's events.

use chrono::{DateTime, Utc};
use schemas::events::*;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::decode::{DomainEvent, ProjectedEvent};
use crate::runtime::{Applied, ApplyError, Projection};

/// Name of this projection (consumer, checkpoint, dead letters).
pub const NAME: &str = "read_models";

pub struct ReadModels;

#[async_trait::async_trait]
impl Projection for ReadModels {
    fn name(&self) -> &str {
        NAME
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &ProjectedEvent,
    ) -> Result<Applied, ApplyError> {
        let id = Uuid::parse_str(&event.envelope.aggregate_id).map_err(|_| {
            ApplyError::Rejected(format!(
                "aggregate id {:?} is not a UUID",
                event.envelope.aggregate_id
            ))
        })?;
        let table = match event.event {
            DomainEvent::Agent(_) => "agents",
            DomainEvent::Task(_) => "tasks",
        };
        let seq = event.envelope.sequence;
        let creates = matches!(
            event.event,
            DomainEvent::Agent(AgentEvent::AgentCreated(_))
                | DomainEvent::Task(TaskEvent::TaskSubmitted(_))
        );
        if creates && seq != 1 {
            return Err(ApplyError::Rejected(format!(
                "{table} {id}: creation event at sequence {seq}"
            )));
        }
        // Fast path: each write is guarded by the row's version (exactly the
        // next event, or a creation of a row that does not exist yet), so the
        // common case costs no separate check.
        let at = event.envelope.occurred_at;
        let written = match &event.event {
            DomainEvent::Agent(e) => apply_agent(conn, id, seq, at, e).await?,
            DomainEvent::Task(e) => apply_task(conn, id, event, e).await?,
        };
        if written {
            return Ok(Applied::Applied);
        }
        // Nothing written: a duplicate, a gap, or a missing row.
        let version: Option<i64> =
            sqlx::query_scalar(&format!("SELECT version FROM {table} WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        match version {
            Some(v) if seq <= v => Ok(Applied::Skipped),
            Some(v) => Err(ApplyError::Rejected(format!(
                "{table} {id}: expected sequence {} next, got {seq}",
                v + 1
            ))),
            None => Err(ApplyError::Rejected(format!(
                "{table} {id}: no row before sequence {seq} ({})",
                event.envelope.event_type
            ))),
        }
    }
}

/// Writes the agent row if `seq` is its next event; true when written.
async fn apply_agent(
    conn: &mut PgConnection,
    id: Uuid,
    seq: i64,
    at: DateTime<Utc>,
    event: &AgentEvent,
) -> Result<bool, sqlx::Error> {
    let done = match event {
        AgentEvent::AgentCreated(e) => {
            sqlx::query(
                "INSERT INTO agents (id, version, name, agent_type, status, capabilities, config, \
                     max_concurrent_tasks, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'inactive', $5, $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(seq)
            .bind(&e.name)
            .bind(&e.agent_type)
            .bind(&e.capabilities)
            .bind(&e.config)
            .bind(e.max_concurrent_tasks as i32)
            .bind(at)
            .execute(conn)
            .await?
        }
        AgentEvent::AgentUpdated(e) => {
            sqlx::query(
                "UPDATE agents SET version = $2, updated_at = $3, name = coalesce($4, name), \
                     capabilities = coalesce($5, capabilities), config = coalesce($6, config), \
                     max_concurrent_tasks = coalesce($7, max_concurrent_tasks) \
                 WHERE id = $1 AND version = $2 - 1",
            )
            .bind(id)
            .bind(seq)
            .bind(at)
            .bind(&e.name)
            .bind(&e.capabilities)
            .bind(&e.config)
            .bind(e.max_concurrent_tasks.map(|m| m as i32))
            .execute(conn)
            .await?
        }
        other => {
            let (status, health_change, reason): (&str, bool, Option<&str>) = match other {
                AgentEvent::AgentActivated(_) => ("active", false, None),
                AgentEvent::AgentDeactivated(_) => ("inactive", false, None),
                AgentEvent::AgentMarkedUnhealthy(e) => ("unhealthy", true, Some(&e.reason)),
                AgentEvent::AgentRecovered(_) => ("active", true, None),
                AgentEvent::AgentRetired(_) => ("retired", false, None),
                AgentEvent::AgentCreated(_) | AgentEvent::AgentUpdated(_) => return Ok(false),
            };
            sqlx::query(
                "UPDATE agents SET version = $2, updated_at = $3, status = $4, \
                     health_reason = CASE WHEN $5 THEN $6 ELSE health_reason END, \
                     last_health_change_at = CASE WHEN $5 THEN $3 ELSE last_health_change_at END, \
                     retired_at = CASE WHEN $4 = 'retired' THEN $3 ELSE retired_at END \
                 WHERE id = $1 AND version = $2 - 1",
            )
            .bind(id)
            .bind(seq)
            .bind(at)
            .bind(status)
            .bind(health_change)
            .bind(reason)
            .execute(conn)
            .await?
        }
    };
    Ok(done.rows_affected() == 1)
}

/// Sets `status` and the columns the event changes, if `seq` ($2) is the
/// row's next event; `extra` is a SQL fragment of further assignments using
/// parameters from $6 on ($5 is the `task_events` row, inserted in the same
/// statement).
fn task_update(extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(
        "WITH h AS (INSERT INTO task_events SELECT * FROM jsonb_populate_record(NULL::task_events, $5) \
             ON CONFLICT DO NOTHING) \
         UPDATE tasks SET version = $2, updated_at = $3, status = coalesce($4, status){sep}{extra} \
         WHERE id = $1 AND version = $2 - 1"
    )
}

async fn apply_task(
    conn: &mut PgConnection,
    id: Uuid,
    event: &ProjectedEvent,
    task_event: &TaskEvent,
) -> Result<bool, sqlx::Error> {
    let seq = event.envelope.sequence;
    let at = event.envelope.occurred_at;
    let meta = &event.envelope.metadata;
    // The history row rides along in the same statement (one round trip).
    let history = history_row(id, event, task_event);
    macro_rules! update {
        ($status:expr, $extra:expr $(, $bind:expr)*) => {
            sqlx::query(&task_update($extra))
                .bind(id)
                .bind(seq)
                .bind(at)
                .bind($status)
                .bind(&history)
                $(.bind($bind))*
                .execute(&mut *conn)
                .await?
        };
    }
    let done = match task_event {
        TaskEvent::TaskSubmitted(e) => {
            sqlx::query(
                "WITH h AS (INSERT INTO task_events SELECT * FROM jsonb_populate_record(NULL::task_events, $18) \
                     ON CONFLICT DO NOTHING) \
                 INSERT INTO tasks (id, version, task_type, status, priority, required_capabilities, \
                     target_agent_id, input, attempt, max_retries, schedule_at, queue_timeout_secs, \
                     execution_timeout_secs, idempotency_key, parent_task_id, depends_on, submitted_by, \
                     correlation_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'submitted', $4, $5, $6, $7, 1, $8, $9, $10, $11, $12, $13, $14, \
                     $15, $16, $17, $17) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(seq)
            .bind(&e.task_type)
            .bind(i16::from(e.priority))
            .bind(&e.required_capabilities)
            .bind(e.target_agent_id)
            .bind(&e.input)
            .bind(e.max_retries as i32)
            .bind(e.schedule_at)
            .bind(e.queue_timeout_secs.map(|s| s as i64))
            .bind(e.execution_timeout_secs.map(|s| s as i64))
            .bind(&e.idempotency_key)
            .bind(e.parent_task_id)
            .bind(&e.depends_on)
            .bind(&meta.actor)
            .bind(&meta.correlation_id)
            .bind(at)
            .bind(&history)
            .execute(&mut *conn)
            .await?
        }
        TaskEvent::TaskScheduled(e) => {
            update!(Some("scheduled"), "schedule_at = $6", e.schedule_at)
        }
        TaskEvent::TaskQueued(e) => {
            update!(
                Some("queued"),
                "queued_at = $3, attempt = $6, agent_id = NULL, lease_expires_at = NULL",
                e.attempt as i32
            )
        }
        TaskEvent::TaskAssigned(e) => {
            update!(
                Some("assigned"),
                "assigned_at = $3, agent_id = $6, attempt = $7, lease_expires_at = $8",
                e.agent_id,
                e.attempt as i32,
                e.lease_expires_at
            )
        }
        TaskEvent::TaskStarted(_) => {
            update!(Some("running"), "started_at = $3, progress = 0")
        }
        TaskEvent::TaskProgressReported(e) => {
            update!(
                None::<&str>,
                "progress = $6, progress_message = $7",
                i16::from(e.percent),
                &e.message
            )
        }
        TaskEvent::TaskSucceeded(e) => {
            update!(
                Some("succeeded"),
                "finished_at = $3, output = $6, progress = 100, error = NULL",
                &e.output
            )
        }
        TaskEvent::TaskFailed(e) => {
            let failure = json!({"attempt": e.attempt, "agent_id": e.agent_id, "error": e.error,
                "retryable": e.retryable, "at": at});
            update!(
                Some("failed"),
                "finished_at = $3, error = $6, failures = failures || jsonb_build_array($7::jsonb)",
                &e.error,
                failure
            )
        }
        TaskEvent::TaskRetryScheduled(e) => {
            update!(
                Some("scheduled"),
                "attempt = $6, schedule_at = $7, finished_at = NULL, agent_id = NULL",
                e.attempt as i32,
                e.not_before
            )
        }
        TaskEvent::TaskCancelled(e) => {
            update!(
                Some("cancelled"),
                "finished_at = $3, cancel_reason = $6",
                &e.reason
            )
        }
        TaskEvent::TaskTimedOut(e) => {
            let phase = serde_json::to_value(e.phase).unwrap_or_default();
            let error = format!(
                "timed out ({} timeout)",
                phase.as_str().unwrap_or("unknown")
            );
            let failure = json!({"attempt": e.attempt, "agent_id": e.agent_id, "error": error,
                "retryable": e.phase != TimeoutPhase::Queue, "at": at});
            update!(
                Some("timed_out"),
                "finished_at = $3, error = $6, failures = failures || jsonb_build_array($7::jsonb)",
                error,
                failure
            )
        }
    };
    Ok(done.rows_affected() == 1)
}

fn event_agent(e: &TaskEvent) -> Option<Uuid> {
    match e {
        TaskEvent::TaskSubmitted(s) => s.target_agent_id,
        TaskEvent::TaskAssigned(a) => Some(a.agent_id),
        TaskEvent::TaskStarted(s) => Some(s.agent_id),
        TaskEvent::TaskProgressReported(p) => Some(p.agent_id),
        TaskEvent::TaskSucceeded(s) => Some(s.agent_id),
        TaskEvent::TaskFailed(f) => f.agent_id,
        TaskEvent::TaskCancelled(c) => c.agent_id,
        TaskEvent::TaskTimedOut(t) => t.agent_id,
        TaskEvent::TaskScheduled(_)
        | TaskEvent::TaskQueued(_)
        | TaskEvent::TaskRetryScheduled(_) => None,
    }
}

/// The `task_events` row of an event, as JSON for `jsonb_populate_record`.
fn history_row(id: Uuid, event: &ProjectedEvent, task_event: &TaskEvent) -> serde_json::Value {
    let e = &event.envelope;
    let payload = serde_json::to_value(task_event).unwrap_or_default();
    let inner = payload
        .get(task_event.event_type())
        .cloned()
        .unwrap_or(payload);
    json!({
        "task_id": id,
        "sequence": e.sequence,
        "stream_sequence": event.stream_sequence,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "occurred_at": e.occurred_at,
        "actor": e.metadata.actor,
        "correlation_id": e.metadata.correlation_id,
        "causation_id": e.metadata.causation_id,
        "request_id": e.metadata.request_id,
        "agent_id": event_agent(task_event),
        "payload": inner,
    })
}
