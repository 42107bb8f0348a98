//! Audit reads: state as of a version or a time, trace by correlation id,
//! and the tamper-evident hash chain.

use std::time::Duration;

use projectors::audit::{self, AsOf, State};
use schemas::state::TaskState;
use schemas::status::TaskStatus;
use serde_json::json;
use tests::*;
use uuid::Uuid;

use crate::support::Apis;

#[tokio::test]
async fn history_as_of_a_version_and_a_time_matches_a_hand_built_state() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let agent = api.agent("w", "worker", &[]).await;
    let agent_id: Uuid = agent.parse().unwrap();
    let (task, _) = api
        .cmd(
            "/api/v1/tasks",
            json!({"task_type": "report", "input": {"q": 3}, "max_retries": 2}),
        )
        .await;
    let step = |path: &'static str, body: serde_json::Value| {
        let (api, task) = (&api, task.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            api.cmd(&format!("/api/v1/tasks/{task}/{path}"), body).await
        }
    };
    step("assign", json!({"agent_id": agent})).await; // 3
    step("start", json!({"agent_id": agent})).await; // 4
    step(
        "fail",
        json!({"agent_id": agent, "error": "disk full", "retryable": true}),
    )
    .await; // 5
    step("retry", json!({})).await; // 6
    step("cancel", json!({"reason": "superseded"})).await; // 7

    let events = audit::history(&sys.pool, "task", &task).await.unwrap();
    assert_eq!(events.len(), 7);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "TaskSubmitted",
            "TaskQueued",
            "TaskAssigned",
            "TaskStarted",
            "TaskFailed",
            "TaskRetryScheduled",
            "TaskCancelled"
        ]
    );
    assert!(events
        .iter()
        .all(|e| e.actor.as_deref() == Some("anonymous") && e.hash.is_some()));

    let base = TaskState {
        task_type: "report".into(),
        input: json!({"q": 3}),
        priority: 5,
        max_retries: 2,
        ..Default::default()
    };
    let running = TaskState {
        version: 4,
        status: Some(TaskStatus::Running),
        agent_id: Some(agent_id),
        attempt: 1,
        progress: Some(0),
        ..base.clone()
    };
    let retrying = TaskState {
        version: 6,
        status: Some(TaskStatus::Scheduled),
        attempt: 2,
        error: Some("disk full".into()),
        failures: vec!["attempt 1: disk full".into()],
        ..running.clone()
    };
    let cancelled = TaskState {
        version: 7,
        status: Some(TaskStatus::Cancelled),
        cancel_reason: Some("superseded".into()),
        ..retrying.clone()
    };
    let at = |as_of| match audit::state_at("task", &events, as_of).unwrap() {
        State::Task(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(at(AsOf::Version(4)), running);
    assert_eq!(at(AsOf::Version(6)), retrying);
    assert_eq!(at(AsOf::Version(7)), cancelled);
    // A time between the failure (5) and the retry (6) sees the failed state.
    let between = events[4].occurred_at.unwrap() + chrono::Duration::milliseconds(10);
    assert!(between < events[5].occurred_at.unwrap());
    let failed = TaskState {
        version: 5,
        status: Some(TaskStatus::Failed),
        error: Some("disk full".into()),
        failures: vec!["attempt 1: disk full".into()],
        ..running.clone()
    };
    assert_eq!(at(AsOf::Time(between)), failed);

    // The same through the query API (folded from the projected history).
    sys.caught_up().await;
    let over_http: TaskState = api
        .read(&format!("/api/v1/tasks/{task}/state?as_of=6"))
        .await
        .pipe(|v| serde_json::from_value(v).unwrap());
    assert_eq!(over_http, retrying);
    let over_http: TaskState = api
        .read(&format!(
            "/api/v1/tasks/{task}/state?as_of={}",
            between.to_rfc3339().replace('+', "%2B")
        ))
        .await
        .pipe(|v| serde_json::from_value(v).unwrap());
    assert_eq!(over_http, failed);
    sys.stop().await;
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

#[tokio::test]
async fn trace_returns_what_one_request_caused_across_a_task_and_its_children() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let submit = |body: serde_json::Value| {
        let api = &api;
        async move {
            let r = api
                .http
                .post(format!("{}/api/v1/tasks", api.command))
                .header("X-Correlation-ID", "req-77")
                .json(&body)
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            v["id"].as_str().unwrap().to_string()
        }
    };
    let parent = submit(json!({"task_type": "plan"})).await;
    let child_a = submit(json!({"task_type": "step", "parent_task_id": parent})).await;
    let child_b =
        submit(json!({"task_type": "step", "parent_task_id": parent, "depends_on": [child_a]}))
            .await;
    api.cmd("/api/v1/tasks", json!({"task_type": "unrelated"}))
        .await;

    let traced = audit::trace(&sys.pool, "req-77").await.unwrap();
    let got: Vec<(String, i64)> = traced
        .iter()
        .map(|e| (e.aggregate_id.clone(), e.sequence))
        .collect();
    assert_eq!(
        got,
        [
            (parent.clone(), 1),
            (parent.clone(), 2),
            (child_a.clone(), 1),
            (child_a.clone(), 2),
            (child_b.clone(), 1)
        ],
        "the parent and both children, in order; child b waits on a dependency"
    );
    sys.caught_up().await;
    let over_http = api.read("/api/v1/audit/correlations/req-77").await;
    assert_eq!(over_http.as_array().unwrap().len(), 5);
    sys.stop().await;
}

#[tokio::test]
async fn an_event_edited_by_hand_breaks_exactly_its_link() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let agent = api.agent("w", "worker", &["x"]).await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(
            api.cmd("/api/v1/tasks", json!({"task_type": "echo"}))
                .await
                .0,
        );
    }
    api.cmd(&format!("/api/v1/tasks/{}/cancel", tasks[2]), json!({}))
        .await;
    let clean = audit::verify_chain(&sys.pool, |_| {}).await.unwrap();
    assert_eq!(clean.events_checked, 1 + 5 * 2 + 1);
    assert_eq!(clean.aggregates_checked, 6);
    assert!(clean.broken.is_empty(), "{clean:?}");

    // The stream carries the same hash.
    sys.caught_up().await;
    let streamed = read_stream(&sys.nats.url()).await;
    let stored: String =
        sqlx::query_scalar("SELECT hash FROM events WHERE aggregate_id = $1 AND sequence = 1")
            .bind(&agent)
            .fetch_one(&sys.pool)
            .await
            .unwrap();
    let copy = streamed
        .iter()
        .find(|e| e.envelope.aggregate_id == agent)
        .unwrap();
    assert_eq!(copy.envelope.hash.as_deref(), Some(stored.as_str()));
    assert_eq!(
        copy.header("Sutazai-Event-Hash").as_deref(),
        Some(stored.as_str())
    );

    sqlx::query(
        "UPDATE events SET payload = '{\"TaskQueued\":{\"attempt\":9}}' WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(&tasks[2])
    .execute(&sys.pool)
    .await
    .unwrap();
    let report = audit::verify_chain(&sys.pool, |_| {}).await.unwrap();
    assert_eq!(report.broken.len(), 1, "{report:?}");
    assert_eq!(report.broken[0].aggregate_id, tasks[2]);
    assert_eq!(report.broken[0].sequence, 2);
    sys.stop().await;
}
