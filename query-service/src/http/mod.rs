//! The read-only HTTP API: routes, middleware, OpenAPI document.

mod agents;
mod audit;
pub mod extract;
mod graph;
mod health;
mod live;
mod search;
mod stats;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use axum::response::IntoResponse;
use axum::Router;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;
use uuid::Uuid;

use crate::db::Table;
use crate::error::ApiError;

/// What every handler can reach: one allocation shared by every request
/// (axum clones the state for each; a clone of this is one reference count,
/// where cloning the fields was a measurable share of a `GET`'s CPU).
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(std::sync::Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state's fields.
pub struct Shared {
    pub pool: PgPool,
    pub stores: crate::stores::Stores,
    pub nats: async_nats::Client,
    pub stream: String,
    pub min_version_wait: Duration,
    /// Reads of one task by id, batched.
    pub reads: crate::reads::TaskReads,
    /// Read-your-writes waits (`min_version`).
    pub visibility: std::sync::Arc<crate::visibility::Visibility>,
    /// Turns true when the server stops, so that live streams end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SutazAI query API",
        description = "Read-only views of agents and tasks built from the event stream, their \
            histories and statistics, and live updates over WebSocket and SSE. Reads that pass \
            `min_version` (the version a command answered with) wait, up to a bound, until the \
            projection has reached it. Every error is an RFC 7807 problem+json body with a \
            stable `code`.",
    ),
    tags(
        (name = "agents", description = "Agent read models"),
        (name = "tasks", description = "Task read models and history"),
        (name = "stats", description = "Aggregates over tasks"),
        (name = "live", description = "Live event streams"),
        (name = "audit", description = "State at a point in time, what one request caused"),
        (name = "search", description = "Semantic, hybrid and full-text search (vector projection)"),
        (name = "graph", description = "Relationships: lineage, neighborhoods, paths (graph projection)"),
        (name = "health", description = "Liveness and readiness"),
    ),
    components(schemas(
        schemas::Problem,
        schemas::EventEnvelope,
        schemas::status::AgentStatus,
        schemas::status::TaskStatus
    ))
)]
struct ApiDoc;

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(search::search_agents))
        .routes(routes!(agents::list_agents))
        .routes(routes!(agents::get_agent))
        .routes(routes!(agents::agent_tasks))
        .routes(routes!(tasks::list_tasks))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::task_events))
        .routes(routes!(stats::stats))
        .routes(routes!(search::search_tasks))
        .routes(routes!(search::similar_tasks))
        .routes(routes!(graph::lineage))
        .routes(routes!(graph::neighborhood))
        .routes(routes!(graph::path))
        .routes(routes!(audit::task_state))
        .routes(routes!(audit::correlation))
        .routes(routes!(live::sse))
        .routes(routes!(live::ws_task))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
}

/// Sheds requests beyond the bound (503 `overloaded`), except the live
/// streams, which stay open for as long as their clients want.
async fn shed_except_live(
    permits: axum::extract::State<Arc<tokio::sync::Semaphore>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    if path.starts_with("/ws/") || path == "/api/v1/stream" {
        return next.run(request).await;
    }
    service_kit::shed(permits, request, next).await
}

pub fn router(state: AppState, request_timeout: Duration, max_in_flight: usize) -> Router {
    let (api, doc) = api_routes().split_for_parts();
    api.merge(SwaggerUi::new("/docs").url("/api-docs/openapi.json", doc))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            request_timeout,
            service_kit::timeout,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1))),
            shed_except_live,
        ))
        .layer(service_kit::trace_layer())
        .layer(middleware::from_fn(service_kit::ids::assign_ids))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .with_state(state)
}

/// Read-your-writes: waits, up to the configured bound, until the read model
/// of `id` has reached `min_version`.
async fn wait_for_version(
    state: &AppState,
    table: Table,
    id: Uuid,
    min_version: Option<i64>,
) -> Result<(), ApiError> {
    let Some(min) = min_version else {
        return Ok(());
    };
    check_min_version(min)?;
    let version = state
        .visibility
        .wait(table, id, min, state.min_version_wait)
        .await?;
    if version.is_some_and(|v| v >= min) {
        return Ok(());
    }
    Err(not_reached(state, id, min, version))
}

fn check_min_version(min: i64) -> Result<(), ApiError> {
    if min < 0 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "min_version must be 0 or more",
        ));
    }
    Ok(())
}

/// The 503 of a read whose `min_version` did not arrive within the wait.
fn not_reached(state: &AppState, id: Uuid, min: i64, version: Option<i64>) -> ApiError {
    let at = version.map_or("not yet projected".to_string(), |v| {
        format!("at version {v}")
    });
    ApiError::VersionNotReached(format!(
        "{id} is {at}; version {min} is not visible after {} ms, retry later",
        state.min_version_wait.as_millis()
    ))
}

/// Page bounds shared by the list endpoints.
fn page(skip: Option<i64>, limit: Option<i64>) -> Result<(i64, i64), ApiError> {
    let skip = skip.unwrap_or(0);
    let limit = limit.unwrap_or(50);
    if !(0..=100_000).contains(&skip) {
        return Err(ApiError::Unprocessable("skip must be 0 to 100000".into()));
    }
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Unprocessable("limit must be 1 to 500".into()));
    }
    Ok((skip, limit))
}
