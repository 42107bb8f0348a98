//! Relationship graph queries: lineage, neighborhood, shortest path.

use axum::extract::State;
use axum::Json;
use projectors::graph::{self, GraphError};
use schemas::query::GraphView;
use schemas::Problem;
use serde::Deserialize;
use service_kit::extract::IdPath;
use utoipa::IntoParams;
use uuid::Uuid;

use super::extract::ValidQuery;
use super::AppState;
use crate::error::ApiError;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LineageParams {
    /// Hops in each direction (1–10, default 3).
    depth: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NeighborhoodParams {
    /// Hops from the agent (1–4, default 2).
    depth: Option<u32>,
    /// Most nodes returned (1–1000, default 200); `truncated` says when cut.
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PathParams {
    /// Start node, `<Label>:<key>`: `Task:<uuid>`, `Agent:<uuid>`,
    /// `Capability:<name>`, `TaskType:<name>` or `Actor:<name>`.
    from: Option<String>,
    /// End node, same form.
    to: Option<String>,
    /// Longest path searched, in hops (1–8, default 6).
    max_depth: Option<u32>,
}

fn bounded(v: Option<u32>, default: u32, max: u32, name: &str) -> Result<u32, ApiError> {
    match v.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::Unprocessable(format!(
            "{name} must be 1 to {max}"
        ))),
    }
}

fn graph_error(e: GraphError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

fn node(param: Option<String>, name: &str) -> Result<String, ApiError> {
    let raw = param
        .ok_or_else(|| ApiError::bad_request("invalid_query", format!("{name} is required")))?;
    let key = graph::parse_node_id(&raw).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            format!(
                "{name} must be <Label>:<key> with a label of {}",
                graph::LABELS.join(", ")
            ),
        )
    })?;
    if matches!(key.label, "Task" | "Agent") && Uuid::parse_str(&key.key).is_err() {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("{name}: a {} key is a UUID", key.label),
        ));
    }
    Ok(key.id())
}

/// A task's ancestors (`CHILD_OF` upward), descendants, dependencies and
/// dependents, each to `depth` hops.
#[utoipa::path(get, path = "/api/v1/graph/tasks/{id}/lineage", tag = "graph",
    params(("id" = Uuid, Path, description = "Task id"), LineageParams),
    responses((status = 200, body = GraphView), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn lineage(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ValidQuery(p): ValidQuery<LineageParams>,
) -> Result<Json<GraphView>, ApiError> {
    let depth = bounded(p.depth, 3, 10, "depth")?;
    let store = state.stores.graph.get("graph").await?;
    state
        .stores
        .bounded(
            "the graph",
            graph::lineage(store.as_ref(), &id.to_string(), depth),
        )
        .await?
        .map_err(graph_error)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("task {id} is not in the graph")))
}

/// What surrounds an agent: its capabilities, its tasks and, further out,
/// co-workers (agents sharing capabilities or tasks), to `depth` hops.
#[utoipa::path(get, path = "/api/v1/graph/agents/{id}/neighborhood", tag = "graph",
    params(("id" = Uuid, Path, description = "Agent id"), NeighborhoodParams),
    responses((status = 200, body = GraphView), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn neighborhood(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ValidQuery(p): ValidQuery<NeighborhoodParams>,
) -> Result<Json<GraphView>, ApiError> {
    let depth = bounded(p.depth, 2, 4, "depth")?;
    let limit = match p.limit.unwrap_or(200) {
        n @ 1..=1000 => n,
        _ => return Err(ApiError::Unprocessable("limit must be 1 to 1000".into())),
    };
    let store = state.stores.graph.get("graph").await?;
    state
        .stores
        .bounded(
            "the graph",
            graph::neighborhood(store.as_ref(), &id.to_string(), depth, limit),
        )
        .await?
        .map_err(graph_error)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("agent {id} is not in the graph")))
}

/// A shortest path between two nodes, edges followed either way; the
/// `path` group lists its node ids in order.
#[utoipa::path(get, path = "/api/v1/graph/path", tag = "graph", params(PathParams),
    responses((status = 200, body = GraphView), (status = 400, body = Problem),
        (status = 404, description = "an end is missing or no path within max_depth", body = Problem),
        (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn path(
    State(state): State<AppState>,
    ValidQuery(p): ValidQuery<PathParams>,
) -> Result<Json<GraphView>, ApiError> {
    let from = node(p.from, "from")?;
    let to = node(p.to, "to")?;
    let max_depth = bounded(p.max_depth, 6, 8, "max_depth")?;
    let store = state.stores.graph.get("graph").await?;
    state
        .stores
        .bounded(
            "the graph",
            graph::path(store.as_ref(), &from, &to, max_depth),
        )
        .await?
        .map_err(graph_error)?
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no path from {from} to {to} within {max_depth} hops"
            ))
        })
}
