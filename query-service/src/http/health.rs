//! Liveness and readiness.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use schemas::http::{HealthStatus, ReadinessStatus};
use service_kit::health;

use super::AppState;

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = HealthStatus)))]
pub async fn health() -> Json<HealthStatus> {
    Json(HealthStatus {
        status: "ok".into(),
    })
}

/// The read models (Postgres) and the live stream (NATS) are reachable.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = ReadinessStatus), (status = 503, body = ReadinessStatus)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ReadinessStatus>) {
    health::readiness(BTreeMap::from([
        ("postgres".to_string(), health::postgres(&state.pool).await),
        ("nats".to_string(), health::nats(&state.nats)),
    ]))
}
