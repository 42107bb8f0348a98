//! Live updates over WebSocket and SSE, and SSE resumption.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tests::System;
use tokio_tungstenite::tungstenite::Message;

use crate::support::Apis;

/// Reads SSE events (id, event, data) off a response body.
struct SseReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseReader {
    fn new(r: reqwest::Response) -> Self {
        Self {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }

    async fn next(&mut self, wait: Duration) -> Option<(u64, String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    return Some((id, event, serde_json::from_str(&data).unwrap()));
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??
                .ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn websocket_and_sse_clients_receive_events_live_and_sse_resumes_exactly() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let agent = api.agent("w", "worker", &[]).await;
    let (task, _) = api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;

    // WebSocket: the task's history first, then each event as it happens.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/tasks/{task}", sys.query.addr))
            .await
            .unwrap();
    // SSE: every task event from now on.
    let sse = api
        .http
        .get(format!(
            "{}/api/v1/stream?aggregate_type=task&aggregate_id={task}&from=0",
            api.query
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert!(sse.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut sse = SseReader::new(sse);

    api.cmd(
        &format!("/api/v1/tasks/{task}/assign"),
        json!({"agent_id": agent}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{task}/start"),
        json!({"agent_id": agent}),
    )
    .await;

    let mut ws_types = Vec::new();
    let mut last_ws_seq = 0;
    while ws_types.len() < 4 {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        let seq = v["stream_sequence"].as_u64().unwrap();
        assert!(seq > last_ws_seq);
        last_ws_seq = seq;
        assert_eq!(v["event"]["aggregate_id"], task);
        ws_types.push(v["event"]["event_type"].as_str().unwrap().to_string());
    }
    assert_eq!(
        ws_types,
        ["TaskSubmitted", "TaskQueued", "TaskAssigned", "TaskStarted"]
    );

    let mut sse_seen = Vec::new();
    while sse_seen.len() < 4 {
        let (id, event, data) = sse
            .next(Duration::from_secs(10))
            .await
            .expect("an SSE event");
        assert_eq!(data["event_type"], event);
        assert_eq!(data["aggregate_id"], task);
        sse_seen.push((id, event));
    }
    let types: Vec<&str> = sse_seen.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(
        types,
        ["TaskSubmitted", "TaskQueued", "TaskAssigned", "TaskStarted"]
    );

    // The SSE client goes away; three events happen; it comes back with its last id.
    drop(sse);
    let last_id = sse_seen.last().unwrap().0;
    api.cmd(
        &format!("/api/v1/tasks/{task}/progress"),
        json!({"agent_id": agent, "percent": 30}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{task}/progress"),
        json!({"agent_id": agent, "percent": 60}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{task}/complete"),
        json!({"agent_id": agent, "output": {}}),
    )
    .await;
    let resumed = api
        .http
        .get(format!(
            "{}/api/v1/stream?aggregate_type=task&aggregate_id={task}",
            api.query
        ))
        .header("Last-Event-ID", last_id.to_string())
        .send()
        .await
        .unwrap();
    let mut resumed = SseReader::new(resumed);
    let mut missed = Vec::new();
    while let Some((id, event, data)) = resumed.next(Duration::from_secs(3)).await {
        assert!(id > last_id);
        missed.push((event, data["sequence"].as_i64().unwrap()));
    }
    assert_eq!(
        missed,
        [
            ("TaskProgressReported".to_string(), 5),
            ("TaskProgressReported".to_string(), 6),
            ("TaskSucceeded".to_string(), 7)
        ],
        "exactly what it missed"
    );

    // The WebSocket saw them live too.
    let mut more = Vec::new();
    while more.len() < 3 {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text).unwrap();
            // Progress reports arrive too, as `{"progress": ...}`.
            if let Some(seq) = v["event"]["sequence"].as_i64() {
                more.push(seq);
            }
        }
    }
    assert_eq!(more, [5, 6, 7]);
    sys.stop().await;
}

#[tokio::test]
async fn progress_is_coalesced_in_the_log_but_every_report_reaches_live_subscribers() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let agent = api.agent("w", "worker", &[]).await;
    let (task, _) = api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;
    api.cmd(
        &format!("/api/v1/tasks/{task}/assign"),
        json!({"agent_id": agent}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{task}/start"),
        json!({"agent_id": agent}),
    )
    .await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/tasks/{task}", sys.query.addr))
            .await
            .unwrap();
    // Let the subscription settle before reporting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut coalesced = Vec::new();
    for p in [10, 12, 14, 16, 18, 40] {
        let r = api
            .http
            .post(format!("{}/api/v1/tasks/{task}/progress", api.command))
            .json(&json!({"agent_id": agent, "percent": p}))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        coalesced.push(body["coalesced"].as_bool().unwrap_or(false));
    }
    assert_eq!(
        coalesced,
        [false, true, true, true, true, false],
        "10 and the jump to 40 are recorded"
    );
    let mut live = Vec::new();
    while live.len() < 6 {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text).unwrap();
            if let Some(p) = v.get("progress") {
                live.push(p["percent"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(
        live,
        [10, 12, 14, 16, 18, 40],
        "every report reached the WebSocket"
    );
    sys.caught_up().await;
    let events = api.read(&format!("/api/v1/tasks/{task}/events")).await;
    let recorded: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "TaskProgressReported")
        .map(|e| e["payload"]["percent"].as_u64().unwrap())
        .collect();
    assert_eq!(recorded, [10, 40]);
    sys.stop().await;
}
