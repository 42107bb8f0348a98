//! Liveness and readiness.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use schemas::http::{DependencyStatus, HealthStatus, ReadinessStatus};

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
    let postgres = match tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await
    {
        Ok(Ok(_)) => up(None),
        Ok(Err(e)) => down(e.to_string()),
        Err(_) => down("no answer within 2 s".into()),
    };
    let nats = match state.nats.connection_state() {
        async_nats::connection::State::Connected => up(None),
        other => down(format!("connection {other}")),
    };
    let mut dependencies = BTreeMap::from([
        ("postgres".to_string(), postgres),
        ("nats".to_string(), nats),
    ]);
    let all_up = dependencies.values().all(|d| d.status == "up");
    let role = match (state.relay_enabled, state.relay.is_leader()) {
        (false, _) => "disabled in this instance",
        (true, true) => "leader",
        (true, false) => "standby",
    };
    dependencies.insert("relay".into(), up(Some(role.into())));
    let status = if all_up { "ready" } else { "not_ready" };
    let code = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(ReadinessStatus {
            status: status.into(),
            dependencies,
        }),
    )
}

fn up(detail: Option<String>) -> DependencyStatus {
    DependencyStatus {
        status: "up".into(),
        detail,
    }
}

fn down(detail: String) -> DependencyStatus {
    DependencyStatus {
        status: "down".into(),
        detail: Some(detail),
    }
}
