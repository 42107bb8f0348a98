//! Liveness and readiness.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use schemas::http::{HealthStatus, ReadinessStatus};
use service_kit::health;

use super::AppState;

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = HealthStatus)))]
pub async fn health() -> Json<HealthStatus> {
    Json(HealthStatus {
        status: "ok".into(),
    })
}

/// Postgres and NATS are reachable; the relay's role is reported too.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Every dependency is up", body = ReadinessStatus),
        (status = 503, description = "A dependency is down", body = ReadinessStatus),
    ))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ReadinessStatus>) {
    let role = match (state.relay_enabled, state.relay.is_leader()) {
        (false, _) => "disabled in this instance",
        (true, true) => "leader",
        (true, false) => "standby",
    };
    health::readiness(BTreeMap::from([
        ("postgres".to_string(), health::postgres(&state.pool).await),
        ("nats".to_string(), health::nats(&state.nats)),
        ("relay".to_string(), health::up(Some(role.into()))),
    ]))
}
