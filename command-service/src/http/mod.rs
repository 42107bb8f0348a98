//! The command HTTP API: routes, middleware, OpenAPI document and health.

mod agents;
pub mod context;
mod extract;
mod health;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::IntoResponse;
use axum::Router;
use schemas::http::CommandAccepted;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;
use uuid::Uuid;

use crate::error::ApiError;
use crate::relay::RelayStatus;
use crate::store::EventStores;
use context::{RequestContext, Tokens};

pub use tasks::idempotent_task_id;

/// What every handler can reach: one allocation shared by every request
/// (axum clones the state for each request; a clone of this is one
/// reference count).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
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
    pub stores: Arc<EventStores>,
    pub tokens: Arc<Tokens>,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub relay: Arc<RelayStatus>,
    pub relay_enabled: bool,
    pub heartbeat_window_secs: u64,
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Requests in flight before new ones are shed with 503 `overloaded`.
    pub max_in_flight: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SutazAI command API",
        description = "Commands that register agents and submit, run and finish tasks. \
            Every accepted command answers with the aggregate's new version; every error \
            is an RFC 7807 problem+json body with a stable `code`. Reads are served by the \
            query service.",
    ),
    tags(
        (name = "agents", description = "Agent registry"),
        (name = "tasks", description = "Task submission and control"),
        (name = "agent-facing", description = "Calls an agent makes about the task it holds"),
        (name = "health", description = "Liveness and readiness"),
    ),
    components(schemas(schemas::Problem))
)]
struct ApiDoc;

/// `If-Match`: the aggregate version the command expects (optimistic concurrency).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header, names("If-Match"))]
#[allow(dead_code)] // Only documents the header; handlers read it with `expected_version`.
pub struct IfMatch(Option<String>);

/// The API's routes with their OpenAPI document.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(agents::create_agent))
        .routes(routes!(agents::update_agent, agents::retire_agent))
        .routes(routes!(agents::activate_agent))
        .routes(routes!(agents::deactivate_agent))
        .routes(routes!(agents::heartbeat))
        .routes(routes!(tasks::submit_task_for_agent))
        .routes(routes!(tasks::submit_task))
        .routes(routes!(tasks::cancel_task))
        .routes(routes!(tasks::assign_task))
        .routes(routes!(tasks::retry_task))
        .routes(routes!(tasks::start_task))
        .routes(routes!(tasks::report_progress))
        .routes(routes!(tasks::complete_task))
        .routes(routes!(tasks::fail_task))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
}

/// The whole HTTP app: routes, docs, and the middleware every request passes.
pub fn router(state: AppState, limits: Limits) -> Router {
    let (api, doc) = api_routes().split_for_parts();
    api.merge(SwaggerUi::new("/docs").url("/api-docs/openapi.json", doc))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            service_kit::timeout,
        ))
        .layer(middleware::from_fn_with_state(
            std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight.max(1))),
            service_kit::shed,
        ))
        .layer(service_kit::trace_layer())
        .layer(middleware::from_fn(service_kit::ids::assign_ids))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Runs one command on an existing aggregate, honouring `If-Match`.
async fn run_command<A>(
    store: &crate::store::Store<A>,
    aggregate_type: &str,
    id: Uuid,
    ctx: &RequestContext,
    headers: &axum::http::HeaderMap,
    command: A::Command,
) -> Result<axum::Json<CommandAccepted>, ApiError>
where
    A: cqrs_es::Aggregate<Error = domain::DomainError, Services = ()> + Clone,
{
    let expected = context::expected_version(headers)?;
    let metadata = ctx.event_metadata(chrono::Utc::now());
    let committed =
        crate::store::execute(store, &id.to_string(), command, metadata, expected).await?;
    Ok(axum::Json(accepted(
        aggregate_type,
        id,
        committed.version,
        ctx,
        false,
    )))
}

fn accepted(
    aggregate_type: &str,
    id: Uuid,
    version: i64,
    ctx: &RequestContext,
    replayed: bool,
) -> CommandAccepted {
    CommandAccepted {
        aggregate_type: aggregate_type.to_string(),
        id,
        version,
        correlation_id: ctx.metadata.correlation_id.clone(),
        replayed,
        coalesced: false,
    }
}
