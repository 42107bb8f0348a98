//! `/metrics` (Prometheus text), `/health` and `/health/ready`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use schemas::http::ReadinessStatus;
use serde_json::json;
use service_kit::health;
use sqlx::PgPool;

use crate::runtime::ProjectionStatus;

#[derive(Clone)]
pub struct MetricsState {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub stream: String,
    pub projections: Vec<(String, Arc<ProjectionStatus>)>,
}

pub fn router(state: MetricsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/health/ready", get(ready))
        .with_state(state)
}

async fn stream_last_sequence(state: &MetricsState) -> Option<u64> {
    let js = async_nats::jetstream::new(state.nats.clone());
    let fut = async {
        let mut stream = js.get_stream(&state.stream).await.ok()?;
        stream.info().await.ok().map(|i| i.state.last_sequence)
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

async fn metrics(State(state): State<MetricsState>) -> impl IntoResponse {
    let last = stream_last_sequence(&state).await;
    let checkpoints: Vec<(String, i64)> =
        sqlx::query_as("SELECT projection, stream_sequence FROM projector_checkpoints")
            .fetch_all(&state.pool)
            .await
            .unwrap_or_default();
    let parked = crate::dead_letters::parked_counts(&state.pool)
        .await
        .unwrap_or_default();
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "sutazai_stream_last_sequence",
        "gauge",
        "Last sequence of the events stream.",
    );
    if let Some(last) = last {
        let _ = writeln!(out, "sutazai_stream_last_sequence {last}");
    }
    for (metric, kind, help) in [
        (
            "sutazai_projector_checkpoint",
            "gauge",
            "Last stream sequence the projection applied.",
        ),
        (
            "sutazai_projector_lag",
            "gauge",
            "Stream events not yet applied by the projection.",
        ),
        (
            "sutazai_projector_dead_letters",
            "gauge",
            "Events parked for the projection.",
        ),
        (
            "sutazai_projector_events_applied_total",
            "counter",
            "Events applied since start.",
        ),
        (
            "sutazai_projector_events_skipped_total",
            "counter",
            "Duplicate deliveries skipped since start.",
        ),
        (
            "sutazai_projector_events_parked_total",
            "counter",
            "Events parked since start.",
        ),
    ] {
        family(&mut out, metric, kind, help);
        for (name, status) in &state.projections {
            let checkpoint = checkpoints
                .iter()
                .find(|(p, _)| p == name)
                .map_or(0, |(_, c)| (*c).max(0) as u64);
            let value = match metric {
                "sutazai_projector_checkpoint" => Some(checkpoint),
                "sutazai_projector_lag" => last.map(|l| l.saturating_sub(checkpoint)),
                "sutazai_projector_dead_letters" => Some(
                    parked
                        .iter()
                        .find(|(p, _)| p == name)
                        .map_or(0, |(_, n)| (*n).max(0) as u64),
                ),
                "sutazai_projector_events_applied_total" => {
                    Some(status.applied.load(Ordering::Relaxed))
                }
                "sutazai_projector_events_skipped_total" => {
                    Some(status.skipped.load(Ordering::Relaxed))
                }
                _ => Some(status.parked.load(Ordering::Relaxed)),
            };
            if let Some(v) = value {
                let _ = writeln!(out, "{metric}{{projection=\"{name}\"}} {v}");
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

async fn ready(State(state): State<MetricsState>) -> (StatusCode, Json<ReadinessStatus>) {
    let mut deps = BTreeMap::from([
        ("postgres".to_string(), health::postgres(&state.pool).await),
        ("nats".to_string(), health::nats(&state.nats)),
    ]);
    for (name, status) in &state.projections {
        let dep = if status.running.load(Ordering::Relaxed) {
            health::up(None)
        } else {
            health::down("not running (standing by or restarting)".into())
        };
        deps.insert(format!("projection:{name}"), dep);
    }
    health::readiness(deps)
}
