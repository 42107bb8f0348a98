//! SQL over the read models. Every statement is parameterised. Tasks are
//! read column by column into their view; the other rows are turned into the
//! wire types by Postgres (`to_jsonb`) and serde.

use chrono::{DateTime, Utc};
use schemas::query::{AgentView, StatsRow, StatsView, TaskEventView, TaskView};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::error::ApiError;

/// The read-model table an aggregate lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Agents,
    Tasks,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Agents => "agents",
            Self::Tasks => "tasks",
        }
    }
}

fn from_json<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::Internal(format!("read model row: {e}")))
}

const AGENT_JSON: &str = "to_jsonb(a) || jsonb_build_object('load', jsonb_build_object( \
    'assigned', (SELECT count(*) FROM tasks t WHERE t.agent_id = a.id AND t.status = 'assigned'), \
    'running', (SELECT count(*) FROM tasks t WHERE t.agent_id = a.id AND t.status = 'running')))";

/// A task row's columns, read in Postgres's binary format straight into
/// [`TaskView`] (every column but the `search` tsvector). Cheaper on both
/// ends than building JSON in Postgres and parsing it here: this is the
/// statement behind `GET /api/v1/tasks/{id}`.
const TASK_COLUMNS: &str = "t.id, t.version, t.task_type, t.status, t.priority, \
    t.required_capabilities, t.target_agent_id, t.agent_id, t.input, t.output, t.error, \
    t.progress, t.progress_message, t.attempt, t.max_retries, t.failures, t.schedule_at, \
    t.queue_timeout_secs, t.execution_timeout_secs, t.idempotency_key, t.parent_task_id, \
    t.depends_on, t.submitted_by, t.correlation_id, t.cancel_reason, t.created_at, \
    t.updated_at, t.queued_at, t.assigned_at, t.lease_expires_at, t.started_at, t.finished_at";

/// The version (last applied sequence) of an aggregate's row, if any.
pub async fn version(pool: &PgPool, table: Table, id: Uuid) -> Result<Option<i64>, ApiError> {
    let sql = format!("SELECT version FROM {} WHERE id = $1", table.name());
    Ok(sqlx::query_scalar(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// The versions of the rows with these ids that exist. Prepared: call it on
/// a pool with sequential scans off (as [`crate::visibility`] does), or a
/// plan kept from when the table was small would scan it whole. (It was sent
/// unprepared before, which costs sqlx a round trip for the statement's
/// description on every call.)
pub async fn versions(
    pool: &PgPool,
    table: Table,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, ApiError> {
    let sql = format!(
        "SELECT id, version FROM {} WHERE id = ANY($1)",
        table.name()
    );
    Ok(sqlx::query_as(&sql).bind(ids).fetch_all(pool).await?)
}

pub async fn agent(pool: &PgPool, id: Uuid) -> Result<Option<AgentView>, ApiError> {
    let row: Option<Value> =
        sqlx::query_scalar(&format!("SELECT {AGENT_JSON} FROM agents a WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?;
    row.map(from_json).transpose()
}

pub async fn task(pool: &PgPool, id: Uuid) -> Result<Option<TaskView>, ApiError> {
    Ok(
        sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks t WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The tasks with these ids that exist, in no particular order. Prepared:
/// call it on a pool with sequential scans off (as [`crate::reads`] does), or
/// a plan kept from when the table was small would scan it whole (see
/// [`versions`]).
pub async fn tasks(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<TaskView>, ApiError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks t WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// Agent list filters.
#[derive(Debug, Default)]
pub struct AgentFilter {
    pub agent_type: Option<String>,
    pub status: Option<String>,
    pub capability: Option<String>,
    pub skip: i64,
    pub limit: i64,
}

fn agent_where(q: &mut QueryBuilder<'_, Postgres>, f: &AgentFilter) {
    q.push(" WHERE true");
    if let Some(t) = &f.agent_type {
        q.push(" AND a.agent_type = ").push_bind(t.clone());
    }
    if let Some(s) = &f.status {
        q.push(" AND a.status = ").push_bind(s.clone());
    }
    if let Some(c) = &f.capability {
        q.push(" AND a.capabilities @> ARRAY[")
            .push_bind(c.clone())
            .push("]::text[]");
    }
}

pub async fn list_agents(
    pool: &PgPool,
    f: &AgentFilter,
) -> Result<(Vec<AgentView>, i64), ApiError> {
    let mut q = QueryBuilder::new(format!("SELECT {AGENT_JSON} FROM agents a"));
    agent_where(&mut q, f);
    q.push(" ORDER BY a.created_at, a.id OFFSET ")
        .push_bind(f.skip)
        .push(" LIMIT ")
        .push_bind(f.limit);
    let rows: Vec<Value> = q.build_query_scalar().fetch_all(pool).await?;
    let mut c = QueryBuilder::new("SELECT count(*) FROM agents a");
    agent_where(&mut c, f);
    let total: i64 = c.build_query_scalar().fetch_one(pool).await?;
    Ok((
        rows.into_iter().map(from_json).collect::<Result<_, _>>()?,
        total,
    ))
}

/// Task list filters.
#[derive(Debug, Default)]
pub struct TaskFilter {
    pub status: Option<String>,
    pub task_type: Option<String>,
    pub agent_id: Option<Uuid>,
    /// Tasks this agent has held or was targeted at (from their history).
    pub touched_by_agent: Option<Uuid>,
    pub priority: Option<i16>,
    pub parent_task_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub q: Option<String>,
    pub skip: i64,
    pub limit: i64,
    /// Keyset position: rows strictly after (created_at, id) in newest-first order.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

fn task_where(q: &mut QueryBuilder<'_, Postgres>, f: &TaskFilter, with_cursor: bool) {
    q.push(" WHERE true");
    if let Some(s) = &f.status {
        q.push(" AND t.status = ").push_bind(s.clone());
    }
    if let Some(t) = &f.task_type {
        q.push(" AND t.task_type = ").push_bind(t.clone());
    }
    if let Some(a) = f.agent_id {
        q.push(" AND t.agent_id = ").push_bind(a);
    }
    if let Some(a) = f.touched_by_agent {
        q.push(" AND t.id IN (SELECT task_id FROM task_events WHERE agent_id = ")
            .push_bind(a)
            .push(")");
    }
    if let Some(p) = f.priority {
        q.push(" AND t.priority = ").push_bind(p);
    }
    if let Some(parent) = f.parent_task_id {
        q.push(" AND t.parent_task_id = ").push_bind(parent);
    }
    if let Some(at) = f.created_after {
        q.push(" AND t.created_at >= ").push_bind(at);
    }
    if let Some(at) = f.created_before {
        q.push(" AND t.created_at < ").push_bind(at);
    }
    if let Some(text) = &f.q {
        q.push(" AND t.search @@ websearch_to_tsquery('english', ")
            .push_bind(text.clone())
            .push(")");
    }
    if let (true, Some((at, id))) = (with_cursor, f.after) {
        q.push(" AND (t.created_at, t.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
}

pub async fn list_tasks(pool: &PgPool, f: &TaskFilter) -> Result<(Vec<TaskView>, i64), ApiError> {
    let mut q = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks t"));
    task_where(&mut q, f, true);
    q.push(" ORDER BY t.created_at DESC, t.id DESC OFFSET ")
        .push_bind(f.skip)
        .push(" LIMIT ")
        .push_bind(f.limit);
    let items: Vec<TaskView> = q.build_query_as().fetch_all(pool).await?;
    let mut c = QueryBuilder::new("SELECT count(*) FROM tasks t");
    task_where(&mut c, f, false);
    let total: i64 = c.build_query_scalar().fetch_one(pool).await?;
    Ok((items, total))
}

pub async fn task_events(pool: &PgPool, id: Uuid) -> Result<Vec<TaskEventView>, ApiError> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(e) FROM task_events e WHERE task_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(from_json).collect()
}

/// Every task event carrying `correlation_id`, in the order they happened.
pub async fn correlated(
    pool: &PgPool,
    correlation_id: &str,
) -> Result<Vec<TaskEventView>, ApiError> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(e) FROM task_events e WHERE correlation_id = $1 \
         ORDER BY occurred_at, stream_sequence",
    )
    .bind(correlation_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(from_json).collect()
}

pub async fn stats(pool: &PgPool) -> Result<StatsView, ApiError> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT jsonb_build_object('task_type', task_type, 'status', status, 'count', count, \
             'avg_run_secs', avg_run_secs, 'max_run_secs', max_run_secs, 'avg_wait_secs', avg_wait_secs) \
         FROM task_stats ORDER BY task_type, status",
    )
    .fetch_all(pool)
    .await?;
    let rows: Vec<StatsRow> = rows.into_iter().map(from_json).collect::<Result<_, _>>()?;
    let mut view = StatsView {
        total: 0,
        by_status: Default::default(),
        by_type: Default::default(),
        rows,
    };
    for r in &view.rows {
        view.total += r.count;
        *view.by_status.entry(r.status.clone()).or_default() += r.count;
        *view.by_type.entry(r.task_type.clone()).or_default() += r.count;
    }
    Ok(view)
}
