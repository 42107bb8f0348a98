//! Statistics over tasks.

use axum::extract::State;
use axum::Json;
use schemas::query::StatsView;
use schemas::Problem;

use super::AppState;
use crate::db;
use crate::error::ApiError;

/// Task counts by status and type, with run and wait durations.
#[utoipa::path(get, path = "/api/v1/stats", tag = "stats",
    responses((status = 200, body = StatsView), (status = 503, body = Problem)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<StatsView>, ApiError> {
    Ok(Json(db::stats(&state.pool).await?))
}
