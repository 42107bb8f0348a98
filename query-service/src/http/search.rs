//! Semantic, hybrid and full-text search over tasks and agents (the vector
//! projection).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use projectors::search::vectors::{Collection, Filter, Hit, Mode, Query};
use schemas::query::{AgentHit, SearchResults, TaskHit};
use schemas::status::TaskStatus;
use schemas::Problem;
use serde::Deserialize;
use serde_json::Value;
use service_kit::extract::IdPath;
use utoipa::IntoParams;
use uuid::Uuid;

use super::extract::ValidQuery;
use super::AppState;
use crate::error::ApiError;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskSearchParams {
    /// What to look for, in words (1–500 characters).
    q: Option<String>,
    /// `hybrid` (default: dense + BM25, fused by reciprocal rank),
    /// `semantic` (dense only) or `text` (BM25 only).
    mode: Option<String>,
    /// Results to return (1–100, default 10).
    limit: Option<usize>,
    #[param(value_type = Option<TaskStatus>)]
    status: Option<TaskStatus>,
    task_type: Option<String>,
    /// Tasks this agent holds or last held.
    agent_id: Option<Uuid>,
    /// 0–9.
    priority: Option<i16>,
    parent_task_id: Option<Uuid>,
    /// Created at or after (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    created_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SimilarParams {
    /// Results to return (1–100, default 10).
    limit: Option<usize>,
    /// `hybrid` (default), `semantic` or `text`.
    mode: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AgentSearchParams {
    /// A job description (1–500 characters).
    q: Option<String>,
    /// `hybrid` (default), `semantic` or `text`.
    mode: Option<String>,
    /// Results to return (1–100, default 10).
    limit: Option<usize>,
    /// Include retired agents (default false).
    include_retired: Option<bool>,
}

fn mode(m: Option<&str>) -> Result<(Mode, &'static str), ApiError> {
    match m.unwrap_or("hybrid") {
        "hybrid" => Ok((Mode::Hybrid, "hybrid")),
        "semantic" => Ok((Mode::Semantic, "semantic")),
        "text" => Ok((Mode::Text, "text")),
        other => Err(ApiError::Unprocessable(format!(
            "mode must be hybrid, semantic or text, not {other:?}"
        ))),
    }
}

fn limit(l: Option<usize>) -> Result<usize, ApiError> {
    match l.unwrap_or(10) {
        n @ 1..=100 => Ok(n),
        _ => Err(ApiError::Unprocessable("limit must be 1 to 100".into())),
    }
}

fn query_text(q: Option<String>) -> Result<String, ApiError> {
    let q = q.map(|q| q.trim().to_string()).unwrap_or_default();
    if q.is_empty() {
        return Err(ApiError::bad_request("invalid_query", "q is required"));
    }
    if q.chars().count() > 500 {
        return Err(ApiError::Unprocessable(
            "q must be at most 500 characters".into(),
        ));
    }
    Ok(q)
}

fn s(p: &serde_json::Map<String, Value>, k: &str) -> String {
    p.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn uuid(p: &serde_json::Map<String, Value>, k: &str) -> Option<Uuid> {
    p.get(k)
        .and_then(Value::as_str)
        .and_then(|v| Uuid::parse_str(v).ok())
}

fn time(p: &serde_json::Map<String, Value>, k: &str) -> Option<DateTime<Utc>> {
    p.get(k)
        .and_then(Value::as_str)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn task_hit(h: Hit) -> TaskHit {
    let p = &h.payload;
    TaskHit {
        id: h.id,
        score: h.score,
        task_type: s(p, "task_type"),
        status: s(p, "status"),
        priority: p.get("priority").and_then(Value::as_i64).unwrap_or(0),
        agent_id: uuid(p, "agent_id"),
        parent_task_id: uuid(p, "parent_task_id"),
        created_at: time(p, "created_at"),
        updated_at: time(p, "updated_at"),
        version: p.get("seq").and_then(Value::as_i64).unwrap_or(0),
        text: s(p, "text"),
    }
}

fn agent_hit(h: Hit) -> AgentHit {
    let p = &h.payload;
    AgentHit {
        id: h.id,
        score: h.score,
        name: s(p, "name"),
        agent_type: s(p, "agent_type"),
        status: s(p, "status"),
        capabilities: p
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        version: p.get("seq").and_then(Value::as_i64).unwrap_or(0),
        text: s(p, "text"),
    }
}

async fn run(
    state: &AppState,
    collection: Collection,
    mode: Mode,
    text: &str,
    dense: Option<Vec<f32>>,
    filter: Filter,
    limit: usize,
) -> Result<Vec<Hit>, ApiError> {
    let stores = &state.stores;
    let search = stores.search.get("vector store").await?;
    let dense = match dense {
        Some(d) => d,
        None if mode == Mode::Text => vec![0.0; search.store.dimension()],
        None => stores
            .bounded("the embedder", search.embed_one(text))
            .await?
            .map_err(|e| ApiError::Unavailable(format!("embedder: {e}")))?,
    };
    let query = Query {
        mode,
        dense,
        sparse: search.sparse_query(text),
        filter,
        limit,
    };
    stores
        .bounded("the vector store", search.store.search(collection, query))
        .await?
        .map_err(|e| match e {
            projectors::search::vectors::VectorError::BadRequest(m) => ApiError::Unprocessable(m),
            other => ApiError::Unavailable(other.to_string()),
        })
}

/// Tasks ranked by meaning (`semantic`), words (`text`, BM25) or both
/// (`hybrid`), with the same filters as the task list.
#[utoipa::path(get, path = "/api/v1/search/tasks", tag = "search", params(TaskSearchParams),
    responses((status = 200, body = SearchResults<TaskHit>), (status = 400, body = Problem),
        (status = 422, body = Problem), (status = 503, description = "vector store or embedder unreachable", body = Problem)))]
pub async fn search_tasks(
    State(state): State<AppState>,
    ValidQuery(p): ValidQuery<TaskSearchParams>,
) -> Result<Json<SearchResults<TaskHit>>, ApiError> {
    let q = query_text(p.q)?;
    let (mode, mode_name) = mode(p.mode.as_deref())?;
    let limit = limit(p.limit)?;
    if p.priority.is_some_and(|v| !(0..=9).contains(&v)) {
        return Err(ApiError::Unprocessable("priority must be 0 to 9".into()));
    }
    if let (Some(a), Some(b)) = (p.created_after, p.created_before) {
        if a >= b {
            return Err(ApiError::Unprocessable(
                "created_after must be before created_before".into(),
            ));
        }
    }
    let mut filter = Filter::default();
    if let Some(s) = p.status {
        filter.keyword.push(("status".into(), s.as_str().into()));
    }
    if let Some(t) = p.task_type.filter(|t| !t.is_empty()) {
        filter.keyword.push(("task_type".into(), t));
    }
    if let Some(a) = p.agent_id {
        filter.keyword.push(("agent_id".into(), a.to_string()));
    }
    if let Some(parent) = p.parent_task_id {
        filter
            .keyword
            .push(("parent_task_id".into(), parent.to_string()));
    }
    if let Some(pr) = p.priority {
        filter.integer.push(("priority".into(), i64::from(pr)));
    }
    if p.created_after.is_some() || p.created_before.is_some() {
        filter.range.push((
            "created_at_ms".into(),
            p.created_after.map(|t| t.timestamp_millis()),
            p.created_before.map(|t| t.timestamp_millis()),
        ));
    }
    let hits = run(&state, Collection::Tasks, mode, &q, None, filter, limit).await?;
    let search = state.stores.search.get("vector store").await?;
    Ok(Json(SearchResults {
        mode: mode_name.into(),
        backend: search.store.backend().into(),
        items: hits.into_iter().map(task_hit).collect(),
    }))
}

/// Tasks most like this one (its own vector and text), itself left out.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/similar", tag = "search",
    params(("id" = Uuid, Path, description = "Task id"), SimilarParams),
    responses((status = 200, body = SearchResults<TaskHit>), (status = 400, body = Problem),
        (status = 404, description = "the task is not indexed (yet)", body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem)))]
pub async fn similar_tasks(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ValidQuery(p): ValidQuery<SimilarParams>,
) -> Result<Json<SearchResults<TaskHit>>, ApiError> {
    let (mode, mode_name) = mode(p.mode.as_deref())?;
    let limit = limit(p.limit)?;
    let search = state.stores.search.get("vector store").await?;
    let stored = state
        .stores
        .bounded("the vector store", search.store.get(Collection::Tasks, id))
        .await?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("task {id} is not indexed")))?;
    let text = s(&stored.payload, "text");
    let filter = Filter {
        exclude_id: Some(id),
        ..Filter::default()
    };
    let hits = run(
        &state,
        Collection::Tasks,
        mode,
        &text,
        stored.dense,
        filter,
        limit,
    )
    .await?;
    Ok(Json(SearchResults {
        mode: mode_name.into(),
        backend: search.store.backend().into(),
        items: hits.into_iter().map(task_hit).collect(),
    }))
}

/// Agents that fit a job description (name, type, capabilities and the
/// `description` in their config); retired agents left out by default.
#[utoipa::path(get, path = "/api/v1/agents/search", tag = "search", params(AgentSearchParams),
    responses((status = 200, body = SearchResults<AgentHit>), (status = 400, body = Problem),
        (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn search_agents(
    State(state): State<AppState>,
    ValidQuery(p): ValidQuery<AgentSearchParams>,
) -> Result<Json<SearchResults<AgentHit>>, ApiError> {
    let q = query_text(p.q)?;
    let (mode, mode_name) = mode(p.mode.as_deref())?;
    let limit = limit(p.limit)?;
    let mut filter = Filter::default();
    if !p.include_retired.unwrap_or(false) {
        filter.not_keyword.push(("status".into(), "retired".into()));
    }
    let hits = run(&state, Collection::Agents, mode, &q, None, filter, limit).await?;
    let search = state.stores.search.get("vector store").await?;
    Ok(Json(SearchResults {
        mode: mode_name.into(),
        backend: search.store.backend().into(),
        items: hits.into_iter().map(agent_hit).collect(),
    }))
}
