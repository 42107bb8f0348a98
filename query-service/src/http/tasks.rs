//! Task reads.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use schemas::query::{Page, TaskEventView, TaskView};
use schemas::status::TaskStatus;
use schemas::Problem;
use serde::Deserialize;
use service_kit::extract::IdPath;
use utoipa::IntoParams;
use uuid::Uuid;

use super::agents::VersionParams;
use super::extract::ValidQuery;
use super::{check_min_version, not_reached, page, wait_for_version, AppState};
use crate::db::{self, Table, TaskFilter};
use crate::error::ApiError;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskListParams {
    /// Rows to skip (0–100000).
    skip: Option<i64>,
    /// Rows to return (1–500, default 50).
    limit: Option<i64>,
    /// Opaque position from a previous page's `next_cursor` (keyset pagination).
    cursor: Option<String>,
    #[param(value_type = Option<TaskStatus>)]
    status: Option<TaskStatus>,
    task_type: Option<String>,
    /// Tasks this agent holds now.
    agent_id: Option<Uuid>,
    /// 0–9.
    priority: Option<i16>,
    /// Children of this task.
    parent_task_id: Option<Uuid>,
    /// Created at or after (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    created_before: Option<DateTime<Utc>>,
    /// Full-text search over the task type and the text in its input
    /// (web-search syntax: words, "phrases", -exclusions, or).
    q: Option<String>,
}

fn encode_cursor(t: &TaskView) -> String {
    format!("{}_{}", t.created_at.timestamp_micros(), t.id)
}

fn decode_cursor(s: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this API issued");
    let (micros, id) = s.split_once('_').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// List tasks, newest first, with filters, full-text search and pagination.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(TaskListParams),
    responses((status = 200, body = Page<TaskView>), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    ValidQuery(p): ValidQuery<TaskListParams>,
) -> Result<Json<Page<TaskView>>, ApiError> {
    let (skip, limit) = page(p.skip, p.limit)?;
    if p.priority.is_some_and(|v| !(0..=9).contains(&v)) {
        return Err(ApiError::Unprocessable("priority must be 0 to 9".into()));
    }
    let q = p.q.map(|q| q.trim().to_string()).filter(|q| !q.is_empty());
    if q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(ApiError::Unprocessable(
            "q must be at most 200 characters".into(),
        ));
    }
    if let (Some(a), Some(b)) = (p.created_after, p.created_before) {
        if a >= b {
            return Err(ApiError::Unprocessable(
                "created_after must be before created_before".into(),
            ));
        }
    }
    let after = p.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = TaskFilter {
        status: p.status.map(|s| s.as_str().to_string()),
        task_type: p.task_type,
        agent_id: p.agent_id,
        priority: p.priority,
        parent_task_id: p.parent_task_id,
        created_after: p.created_after,
        created_before: p.created_before,
        q,
        skip,
        limit,
        after,
        ..Default::default()
    };
    let (items, total) = db::list_tasks(&state.pool, &filter).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(encode_cursor))
        .flatten();
    Ok(Json(Page {
        items,
        total,
        skip,
        limit,
        next_cursor,
    }))
}

/// One task in full.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id"), VersionParams),
    responses(
        (status = 200, body = TaskView), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 503, description = "min_version not reached in time (Retry-After)", body = Problem),
    ))]
pub async fn get_task(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ValidQuery(p): ValidQuery<VersionParams>,
) -> Result<Json<TaskView>, ApiError> {
    let Some(min) = p.min_version else {
        return state
            .reads
            .task(id)
            .await?
            .map(Json)
            .ok_or_else(|| ApiError::NotFound(format!("task {id} not found")));
    };
    check_min_version(min)?;
    // The row comes from the read that saw the version arrive (this read's
    // own or the checker's): no second read.
    let view = state
        .visibility
        .wait_for(Table::Tasks, id, min, state.min_version_wait, || {
            state.reads.task(id)
        })
        .await?;
    match view {
        Some(view) if view.version >= min => Ok(Json(view)),
        other => Err(not_reached(&state, id, min, other.map(|v| v.version))),
    }
}

/// A task's history: every event with its actor and correlation ids, in order.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/events", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id"), VersionParams),
    responses(
        (status = 200, body = Vec<TaskEventView>), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 503, body = Problem),
    ))]
pub async fn task_events(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ValidQuery(p): ValidQuery<VersionParams>,
) -> Result<Json<Vec<TaskEventView>>, ApiError> {
    wait_for_version(&state, Table::Tasks, id, p.min_version).await?;
    let events = db::task_events(&state.pool, id).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("task {id} not found")));
    }
    Ok(Json(events))
}
