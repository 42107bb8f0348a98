//! Agent reads.

use axum::extract::State;
use axum::Json;
use schemas::query::{AgentView, Page, TaskView};
use schemas::status::{AgentStatus, TaskStatus};
use schemas::Problem;
use serde::Deserialize;
use service_kit::extract::IdPath;
use utoipa::IntoParams;

use super::extract::ValidQuery;
use super::{page, wait_for_version, AppState};
use crate::db::{self, AgentFilter, Table, TaskFilter};
use crate::error::ApiError;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AgentListParams {
    /// Rows to skip (0–100000).
    skip: Option<i64>,
    /// Rows to return (1–500, default 50).
    limit: Option<i64>,
    agent_type: Option<String>,
    #[param(value_type = Option<AgentStatus>)]
    status: Option<AgentStatus>,
    /// Agents offering this capability.
    capability: Option<String>,
}

/// List agents, oldest first.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(AgentListParams),
    responses((status = 200, body = Page<AgentView>), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn list_agents(
    State(state): State<AppState>,
    ValidQuery(p): ValidQuery<AgentListParams>,
) -> Result<Json<Page<AgentView>>, ApiError> {
    let (skip, limit) = page(p.skip, p.limit)?;
    let filter = AgentFilter {
        agent_type: p.agent_type,
        status: p.status.map(|s| s.as_str().to_string()),
        capability: p.capability.map(|c| c.trim().to_ascii_lowercase()),
        skip,
        limit,
    };
    let (items, total) = db::list_agents(&state.pool, &filter).await?;
    Ok(Json(Page {
        items,
        total,
        skip,
        limit,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionParams {
    /// Wait (bounded) until the read model reflects at least this aggregate version.
    pub min_version: Option<i64>,
}

/// One agent, with its current load.
#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id"), VersionParams),
    responses(
        (status = 200, body = AgentView), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 503, description = "min_version not reached in time (Retry-After)", body = Problem),
    ))]
pub async fn get_agent(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ValidQuery(p): ValidQuery<VersionParams>,
) -> Result<Json<AgentView>, ApiError> {
    wait_for_version(&state, Table::Agents, id, p.min_version).await?;
    db::agent(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("agent {id} not found")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AgentTasksParams {
    skip: Option<i64>,
    limit: Option<i64>,
    #[param(value_type = Option<TaskStatus>)]
    status: Option<TaskStatus>,
    /// Wait (bounded) until the agent's read model reflects this version.
    min_version: Option<i64>,
}

/// Tasks an agent holds, held, or was targeted at, newest first.
#[utoipa::path(get, path = "/api/v1/agents/{id}/tasks", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id"), AgentTasksParams),
    responses((status = 200, body = Page<TaskView>), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn agent_tasks(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ValidQuery(p): ValidQuery<AgentTasksParams>,
) -> Result<Json<Page<TaskView>>, ApiError> {
    wait_for_version(&state, Table::Agents, id, p.min_version).await?;
    if db::version(&state.pool, Table::Agents, id).await?.is_none() {
        return Err(ApiError::NotFound(format!("agent {id} not found")));
    }
    let (skip, limit) = page(p.skip, p.limit)?;
    let filter = TaskFilter {
        touched_by_agent: Some(id),
        status: p.status.map(|s| s.as_str().to_string()),
        skip,
        limit,
        ..Default::default()
    };
    let (items, total) = db::list_tasks(&state.pool, &filter).await?;
    Ok(Json(Page {
        items,
        total,
        skip,
        limit,
        next_cursor: None,
    }))
}
