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

/// The read models (Postgres), the live stream (NATS), the vector store and
/// the graph are reachable.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = ReadinessStatus), (status = 503, body = ReadinessStatus)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ReadinessStatus>) {
    let stores = &state.stores;
    let vectors = match stores.search.status().await {
        Err(e) => health::down(e),
        Ok(search) => match stores
            .bounded("the vector store", search.store.ping())
            .await
        {
            Ok(Ok(())) => health::up(Some(search.store.backend().to_string())),
            Ok(Err(e)) => health::down(e.to_string()),
            Err(e) => health::down(e.to_string()),
        },
    };
    let graph = match stores.graph.status().await {
        Err(e) => health::down(e),
        Ok(graph) => match stores.bounded("the graph", graph.ping()).await {
            Ok(Ok(())) => health::up(Some(graph.backend().to_string())),
            Ok(Err(e)) => health::down(e.to_string()),
            Err(e) => health::down(e.to_string()),
        },
    };
    health::readiness(BTreeMap::from([
        ("postgres".to_string(), health::postgres(&state.pool).await),
        ("nats".to_string(), health::nats(&state.nats)),
        ("vectors".to_string(), vectors),
        ("graph".to_string(), graph),
    ]))
}
