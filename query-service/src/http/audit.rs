//! Audit reads for the UI, over the projected task history (the query side
//! never reads the event store; the replay tool does, for the record).

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use schemas::query::TaskEventView;
use schemas::state::TaskState;
use schemas::{Problem, TaskEvent};
use serde::Deserialize;
use service_kit::extract::IdPath;
use utoipa::IntoParams;

use super::extract::ValidQuery;
use super::AppState;
use crate::db;
use crate::error::ApiError;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StateParams {
    /// A version number or an RFC 3339 time; the latest state when absent.
    as_of: Option<String>,
}

enum AsOf {
    Version(i64),
    Time(DateTime<Utc>),
}

fn parse_as_of(s: &str) -> Result<AsOf, ApiError> {
    if let Ok(v) = s.parse::<i64>() {
        return if v >= 0 {
            Ok(AsOf::Version(v))
        } else {
            Err(ApiError::bad_request(
                "invalid_query",
                "as_of version must be 0 or more",
            ))
        };
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| AsOf::Time(t.with_timezone(&Utc)))
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                "as_of is neither a version nor an RFC 3339 time",
            )
        })
}

/// A task's state at a version or a time, folded from its history.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/state", tag = "audit",
    params(("id" = Uuid, Path, description = "Task id"), StateParams),
    responses((status = 200, body = TaskState), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn task_state(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ValidQuery(p): ValidQuery<StateParams>,
) -> Result<Json<TaskState>, ApiError> {
    let as_of = p.as_of.as_deref().map(parse_as_of).transpose()?;
    let events = db::task_events(&state.pool, id).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("task {id} not found")));
    }
    let mut folded = TaskState::default();
    for e in events {
        let keep = match as_of {
            None => true,
            Some(AsOf::Version(v)) => e.sequence <= v,
            Some(AsOf::Time(t)) => e.occurred_at <= t,
        };
        if !keep {
            break;
        }
        let tagged = serde_json::json!({ e.event_type.clone(): e.payload });
        let event: TaskEvent = serde_json::from_value(tagged).map_err(|x| {
            ApiError::Internal(format!("history of {id} unreadable at {}: {x}", e.sequence))
        })?;
        folded.apply(e.sequence, &event);
    }
    Ok(Json(folded))
}

/// Every task event one request caused (its correlation id), in order.
#[utoipa::path(get, path = "/api/v1/audit/correlations/{id}", tag = "audit",
    params(("id" = String, Path, description = "Correlation id")),
    responses((status = 200, body = Vec<TaskEventView>), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn correlation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<TaskEventView>>, ApiError> {
    let ok = service_kit::ids::is_valid_id(&id);
    if !ok {
        return Err(ApiError::bad_request(
            "invalid_id",
            service_kit::ids::rule(&service_kit::ids::CORRELATION_ID),
        ));
    }
    let events = db::correlated(&state.pool, &id).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no events carry correlation id {id}"
        )));
    }
    Ok(Json(events))
}
