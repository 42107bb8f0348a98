//! Readiness checks every server answers `/health/ready` with.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Json;
use schemas::http::{DependencyStatus, ReadinessStatus};
use sqlx::PgPool;

pub fn up(detail: Option<String>) -> DependencyStatus {
    DependencyStatus {
        status: "up".into(),
        detail,
    }
}

pub fn down(detail: String) -> DependencyStatus {
    DependencyStatus {
        status: "down".into(),
        detail: Some(detail),
    }
}

/// Postgres answers `SELECT 1` within 2 s.
pub async fn postgres(pool: &PgPool) -> DependencyStatus {
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool),
    )
    .await;
    match answer {
        Ok(Ok(_)) => up(None),
        Ok(Err(e)) => down(e.to_string()),
        Err(_) => down("no answer within 2 s".into()),
    }
}

/// The NATS connection is up.
pub fn nats(client: &async_nats::Client) -> DependencyStatus {
    match client.connection_state() {
        async_nats::connection::State::Connected => up(None),
        other => down(format!("connection {other}")),
    }
}

/// 200 `ready` when every dependency is up, else 503 `not_ready`.
pub fn readiness(
    dependencies: BTreeMap<String, DependencyStatus>,
) -> (StatusCode, Json<ReadinessStatus>) {
    let ok = dependencies.values().all(|d| d.status == "up");
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = if ok { "ready" } else { "not_ready" };
    (
        code,
        Json(ReadinessStatus {
            status: status.into(),
            dependencies,
        }),
    )
}
