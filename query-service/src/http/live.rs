//! Live updates: each event as it happens, over SSE or WebSocket, resumable
//! from a stream position so that a reconnecting client misses nothing.
//!
//! Each client gets its own ordered JetStream consumer (ephemeral, cleaned up
//! by the server when the client goes away) filtered to what it asked for.

use std::convert::Infallible;

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use schemas::subjects::{self, AGENT, EVENTS_WILDCARD, TASK};
use schemas::Problem;
use serde::Deserialize;
use service_kit::extract::IdPath;
use utoipa::IntoParams;
use uuid::Uuid;

use super::extract::ValidQuery;
use super::AppState;
use crate::error::ApiError;

type Messages = consumer::pull::Ordered;

/// Opens an ordered consumer on `subject` from `deliver`.
async fn subscribe(
    state: &AppState,
    subject: String,
    deliver: DeliverPolicy,
) -> Result<Messages, ApiError> {
    let js = async_nats::jetstream::new(state.nats.clone());
    let unavailable = |e: String| ApiError::Unavailable(format!("event stream unreachable: {e}"));
    let stream = js
        .get_stream(&state.stream)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    consumer
        .messages()
        .await
        .map_err(|e| unavailable(e.to_string()))
}

/// Resume after stream position `n`: deliver from `n + 1`.
fn after(n: u64) -> DeliverPolicy {
    DeliverPolicy::ByStartSequence {
        start_sequence: n.saturating_add(1),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// `agent` or `task`; all aggregates when absent.
    aggregate_type: Option<String>,
    /// One aggregate (needs `aggregate_type`).
    aggregate_id: Option<Uuid>,
    /// Resume after this stream position (the last SSE `id` you received);
    /// `0` replays from the beginning. `Last-Event-ID` takes precedence.
    /// Without either, only new events are sent.
    from: Option<u64>,
}

fn filter_subject(aggregate_type: Option<&str>, id: Option<Uuid>) -> Result<String, ApiError> {
    match (aggregate_type, id) {
        (None, None) => Ok(EVENTS_WILDCARD.to_string()),
        (None, Some(_)) => Err(ApiError::Unprocessable(
            "aggregate_id needs aggregate_type".into(),
        )),
        (Some(t), id) if t == AGENT || t == TASK => Ok(match id {
            Some(id) => subjects::event_subject(t, &id.to_string()),
            None => subjects::aggregate_type_subject(t),
        }),
        (Some(t), _) => Err(ApiError::Unprocessable(format!(
            "aggregate_type must be `agent` or `task`, not {t:?}"
        ))),
    }
}

/// Server-sent events: one SSE event per domain event, `id` = stream
/// position, `event` = event type, `data` = the envelope (JSON). For one task,
/// every progress report (recorded or coalesced) also arrives as a
/// `progress` event without an id.
#[utoipa::path(get, path = "/api/v1/stream", tag = "live", params(StreamParams,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this stream position")),
    responses(
        (status = 200, description = "text/event-stream of envelopes", content_type = "text/event-stream", body = schemas::EventEnvelope),
        (status = 400, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem),
    ))]
pub async fn sse(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidQuery(p): ValidQuery<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let subject = filter_subject(p.aggregate_type.as_deref(), p.aggregate_id)?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_header",
                        "Last-Event-ID must be a stream position",
                    )
                })?,
        ),
    };
    let deliver = last_event_id.or(p.from).map_or(DeliverPolicy::New, after);
    let progress = match (p.aggregate_type.as_deref(), p.aggregate_id) {
        (Some(TASK), Some(id)) => Some(progress_updates(&state, id).await?),
        _ => None,
    };
    let messages = subscribe(&state, subject, deliver).await?;
    let mut stopping = state.stopping.clone();
    let stopping_progress = state.stopping.clone();
    let events = messages
        .take_until(async move {
            let _ = stopping.wait_for(|s| *s).await;
        })
        .take_while(|m| futures::future::ready(m.is_ok()))
        .filter_map(|m| async move {
            let m = m.ok()?;
            let seq = m.info().ok()?.stream_sequence;
            let event_type = m
                .headers
                .as_ref()
                .and_then(|h| h.get(subjects::headers::EVENT_TYPE))
                .map_or("event".to_string(), |v| v.to_string());
            let data = String::from_utf8_lossy(&m.payload).into_owned();
            Some(Ok(Event::default()
                .id(seq.to_string())
                .event(event_type)
                .data(data)))
        });
    // Every progress report of the task, recorded or coalesced, as `progress`
    // events without an id (they are not stream positions).
    let progress = futures::stream::iter(progress)
        .flatten()
        .take_until(async move {
            let mut s = stopping_progress;
            let _ = s.wait_for(|s| *s).await;
        })
        .map(|m| {
            Ok(Event::default()
                .event("progress")
                .data(String::from_utf8_lossy(&m.payload)))
        });
    let merged = futures::stream::select(events, progress);
    Ok(Sse::new(merged).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WsParams {
    /// Resume after this stream position; without it the task's whole
    /// history is sent first, then each new event.
    from: Option<u64>,
}

/// WebSocket: each event of one task as a text message
/// `{"stream_sequence": n, "event": <envelope>}`, and every progress report
/// (recorded or coalesced) as `{"progress": {...}}`.
#[utoipa::path(get, path = "/ws/tasks/{id}", tag = "live",
    params(("id" = Uuid, Path, description = "Task id"), WsParams),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = Problem), (status = 503, body = Problem),
    ))]
pub async fn ws_task(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ValidQuery(p): ValidQuery<WsParams>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let deliver = p.from.map_or(DeliverPolicy::All, after);
    let progress = progress_updates(&state, id).await?;
    let messages = subscribe(
        &state,
        subjects::event_subject(TASK, &id.to_string()),
        deliver,
    )
    .await?;
    let stopping = state.stopping.clone();
    Ok(ws
        .on_upgrade(move |socket| pump(socket, messages, progress, stopping))
        .into_response())
}

/// Every progress report of a task (core NATS; not stored, not resumable).
async fn progress_updates(
    state: &AppState,
    task_id: Uuid,
) -> Result<async_nats::Subscriber, ApiError> {
    state
        .nats
        .subscribe(subjects::task_progress(&task_id.to_string()))
        .await
        .map_err(|e| ApiError::Unavailable(format!("event stream unreachable: {e}")))
}

async fn pump(
    mut socket: WebSocket,
    mut messages: Messages,
    mut progress: async_nats::Subscriber,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            update = progress.next() => {
                let Some(m) = update else { continue };
                let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                let text = serde_json::json!({"progress": body}).to_string();
                if socket.send(WsMessage::Text(text.into())).await.is_err() {
                    break;
                }
            }
            _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                let _ = socket.send(WsMessage::Close(None)).await;
                break;
            }
            next = messages.next() => {
                let Some(Ok(m)) = next else { break };
                let Ok(info) = m.info() else { continue };
                let seq = info.stream_sequence;
                let event: serde_json::Value = match serde_json::from_slice(&m.payload) {
                    Ok(v) => v,
                    Err(_) => serde_json::Value::String(String::from_utf8_lossy(&m.payload).into_owned()),
                };
                let text = serde_json::json!({"stream_sequence": seq, "event": event}).to_string();
                if socket.send(WsMessage::Text(text.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
