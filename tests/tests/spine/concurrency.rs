//! Concurrent conflicting commands on one aggregate: exactly the valid ones win.

use std::sync::Arc;

use serde_json::json;
use tests::*;

use crate::support::{problem, Api};

#[tokio::test]
async fn conditional_updates_at_one_version_let_exactly_one_through() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let server = start_service(config(&db, &nats)).await;
    let api = Arc::new(Api::new(base_url(&server)));
    let agent = api.create_agent(&["echo"]).await;

    let mut handles = Vec::new();
    for i in 0..24 {
        let api = api.clone();
        let agent = agent.clone();
        handles.push(tokio::spawn(async move {
            api.http
                .patch(format!("{}/api/v1/agents/{agent}", api.base))
                .header("If-Match", "\"1\"")
                .json(&json!({"name": format!("name-{i}")}))
                .send()
                .await
                .unwrap()
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for h in handles {
        let r = h.await.unwrap();
        if r.status() == 200 {
            ok += 1;
        } else {
            let (status, body) = problem(r).await;
            assert_eq!(status, 409, "{body}");
            assert_eq!(body["code"], "version_conflict");
            conflicts += 1;
        }
    }
    assert_eq!((ok, conflicts), (1, 23));
    let pool = db.pool().await;
    assert_eq!(event_count(&pool).await, 2, "created + one update");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn racing_transitions_on_one_task_leave_one_consistent_outcome() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let server = start_service(config(&db, &nats)).await;
    let api = Arc::new(Api::new(base_url(&server)));
    let agent = api.create_agent(&["echo"]).await;
    let task = api.submit("echo").await;
    api.ok(
        &format!("/api/v1/tasks/{task}/assign"),
        json!({"agent_id": agent}),
    )
    .await;
    api.ok(
        &format!("/api/v1/tasks/{task}/start"),
        json!({"agent_id": agent}),
    )
    .await;

    // 12 cancels and 12 completes race on a running task: exactly one wins.
    let mut handles = Vec::new();
    for i in 0..24 {
        let api = api.clone();
        let (task, agent) = (task.clone(), agent.clone());
        handles.push(tokio::spawn(async move {
            let r = if i % 2 == 0 {
                api.post(
                    &format!("/api/v1/tasks/{task}/cancel"),
                    json!({"reason": "race"}),
                )
                .await
            } else {
                api.post(
                    &format!("/api/v1/tasks/{task}/complete"),
                    json!({"agent_id": agent, "output": {}}),
                )
                .await
            };
            (i % 2 == 0, r)
        }));
    }
    let mut winners = Vec::new();
    for h in handles {
        let (is_cancel, r) = h.await.unwrap();
        if r.status() == 200 {
            winners.push(is_cancel);
        } else {
            let (status, body) = problem(r).await;
            assert_eq!(status, 409, "{body}");
            let code = body["code"].as_str().unwrap();
            assert!(
                code == "version_conflict" || code == "illegal_transition",
                "{code}"
            );
        }
    }
    assert_eq!(winners.len(), 1, "exactly one terminal transition");
    let pool = db.pool().await;
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&task)
    .fetch_all(&pool)
    .await
    .unwrap();
    let last = if winners[0] {
        "TaskCancelled"
    } else {
        "TaskSucceeded"
    };
    assert_eq!(
        types,
        [
            "TaskSubmitted",
            "TaskQueued",
            "TaskAssigned",
            "TaskStarted",
            last
        ]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_submits_with_one_idempotency_key_create_one_task() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let server = start_service(config(&db, &nats)).await;
    let api = Arc::new(Api::new(base_url(&server)));
    let mut handles = Vec::new();
    for _ in 0..20 {
        let api = api.clone();
        handles.push(tokio::spawn(async move {
            let r = api
                .http
                .post(format!("{}/api/v1/tasks", api.base))
                .header("Idempotency-Key", "nightly-report")
                .json(&json!({"task_type": "report"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body["id"].as_str().unwrap().to_string())
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        let (status, id) = h.await.unwrap();
        assert!(status == 201 || status == 200, "{status}");
        created += usize::from(status == 201);
        ids.insert(id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let pool = db.pool().await;
    assert_eq!(event_count(&pool).await, 2);
    server.shutdown().await.unwrap();
}

/// Beyond `COMMAND_MAX_IN_FLIGHT` the service sheds load at once: 503
/// `overloaded` with `Retry-After`, never a queue without bound; what it
/// accepted is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_the_in_flight_bound_are_shed_with_503_overloaded() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let mut c = config(&db, &nats);
    c.max_in_flight = 2;
    let server = start_service(c).await;
    let url = format!("http://{}/api/v1/tasks", server.addr);
    let http = reqwest::Client::new();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(60));
    let mut handles = Vec::new();
    for i in 0..60 {
        let (http, url, barrier) = (http.clone(), url.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = http
                .post(&url)
                .header("X-Actor", "shed-test")
                .json(&serde_json::json!({"task_type": "echo", "input": {"n": i}}))
                .send()
                .await
                .expect("answer");
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").is_some();
            let body: serde_json::Value = r.json().await.expect("json");
            (status, retry_after, body)
        }));
    }
    let (mut accepted, mut shed) = (0, 0);
    for h in handles {
        let (status, retry_after, body) = h.await.expect("task");
        match status {
            200..=299 => accepted += 1,
            503 => {
                assert_eq!(body["code"], "overloaded", "{body}");
                assert!(retry_after, "503 overloaded carries Retry-After");
                shed += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        shed > 0,
        "60 simultaneous requests over a bound of 2 shed some"
    );
    assert!(accepted > 0);
    let pool = db.pool().await;
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'task' AND event_type = 'TaskSubmitted'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(
        stored, accepted,
        "every accepted command committed, no shed one"
    );
    server.shutdown().await.ok();
}
