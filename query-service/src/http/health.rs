//! Liveness and readiness.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use schemas::http::{DependencyStatus, HealthStatus, ReadinessStatus};

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
    let pg = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await;
    let postgres = match pg {
        Ok(Ok(_)) => status(true, None),
        Ok(Err(e)) => status(false, Some(e.to_string())),
        Err(_) => status(false, Some("no answer within 2 s".into())),
    };
    let nats = match state.nats.connection_state() {
        async_nats::connection::State::Connected => status(true, None),
        other => status(false, Some(format!("connection {other}"))),
    };
    let dependencies = BTreeMap::from([
        ("postgres".to_string(), postgres),
        ("nats".to_string(), nats),
    ]);
    let ok = dependencies.values().all(|d| d.status == "up");
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(ReadinessStatus {
            status: if ok { "ready" } else { "not_ready" }.into(),
            dependencies,
        }),
    )
}

fn status(up: bool, detail: Option<String>) -> DependencyStatus {
    DependencyStatus {
        status: if up { "up" } else { "down" }.into(),
        detail,
    }
}
