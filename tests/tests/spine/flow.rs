//! The happy path end to end, health and docs.

use std::time::Duration;

use serde_json::json;
use tests::*;

use crate::support::Api;

#[tokio::test]
async fn commands_reach_the_stream_in_order_with_envelope_and_headers() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let server = start_service(config(&db, &nats)).await;
    let api = Api::new(base_url(&server));

    let agent = api.create_agent(&["echo", "nlp"]).await;
    api.ok(&format!("/api/v1/agents/{agent}/activate"), json!({}))
        .await;
    let other_tasks = [api.submit("echo").await, api.submit("summarize").await];
    // A correlated task that goes through its whole life.
    let r = api
        .http
        .post(format!("{}/api/v1/tasks", api.base))
        .header("X-Correlation-ID", "order-42")
        .header("X-Actor", "alice")
        .json(&json!({"task_type": "echo", "input": {"text": "hi"}, "required_capabilities": ["echo"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-correlation-id"], "order-42");
    let accepted: serde_json::Value = r.json().await.unwrap();
    assert_eq!(accepted["version"], 2, "submitted + queued");
    assert_eq!(accepted["correlation_id"], "order-42");
    let task = accepted["id"].as_str().unwrap().to_string();

    api.ok(
        &format!("/api/v1/tasks/{task}/assign"),
        json!({"agent_id": agent, "lease_secs": 60}),
    )
    .await;
    api.ok(
        &format!("/api/v1/tasks/{task}/start"),
        json!({"agent_id": agent}),
    )
    .await;
    api.ok(
        &format!("/api/v1/tasks/{task}/progress"),
        json!({"agent_id": agent, "percent": 50, "message": "half"}),
    )
    .await;
    let done = api
        .ok(
            &format!("/api/v1/tasks/{task}/complete"),
            json!({"agent_id": agent, "output": {"text": "hi"}}),
        )
        .await;
    assert_eq!(done["version"], 6);

    let pool = db.pool().await;
    wait_until(Duration::from_secs(10), "the outbox to drain", || {
        let pool = pool.clone();
        async move { outbox_len(&pool).await == 0 }
    })
    .await;
    let events = assert_stream_matches_store(&pool, &nats.url()).await;
    assert_eq!(events.len(), 2 + 2 * 2 + 6);

    let task_events: Vec<_> = events
        .iter()
        .filter(|e| e.envelope.aggregate_id == task)
        .collect();
    let types: Vec<&str> = task_events
        .iter()
        .map(|e| e.envelope.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "TaskSubmitted",
            "TaskQueued",
            "TaskAssigned",
            "TaskStarted",
            "TaskProgressReported",
            "TaskSucceeded"
        ]
    );
    for (i, e) in task_events.iter().enumerate() {
        let seq = i as i64 + 1;
        assert_eq!(e.subject, format!("sutazai.events.task.{task}"));
        assert_eq!(e.envelope.sequence, seq);
        assert_eq!(e.envelope.aggregate_type, "task");
        assert_eq!(e.envelope.event_version, "1.0");
        assert_eq!(
            e.envelope.event_id,
            schemas::EventEnvelope::event_id_for("task", &task, seq)
        );
        assert_eq!(
            e.header("Nats-Msg-Id").as_deref(),
            Some(format!("task/{task}/{seq}").as_str())
        );
        assert_eq!(
            e.header("Sutazai-Event-Type").as_deref(),
            Some(e.envelope.event_type.as_str())
        );
        assert_eq!(
            e.header("Sutazai-Aggregate-Sequence"),
            Some(seq.to_string())
        );
        assert!(!e.envelope.metadata.request_id.is_empty());
        assert!(!e.envelope.metadata.causation_id.is_empty());
    }
    // The submit carried the client's correlation id and actor.
    let first = task_events[0];
    assert_eq!(first.envelope.metadata.correlation_id, "order-42");
    assert_eq!(first.envelope.metadata.actor, "alice");
    assert_eq!(
        first.header("Sutazai-Correlation-Id").as_deref(),
        Some("order-42")
    );
    // The payload decodes as the schema's event.
    let decoded: schemas::TaskEvent =
        serde_json::from_value(task_events[5].envelope.payload.clone()).unwrap();
    assert!(
        matches!(decoded, schemas::TaskEvent::TaskSucceeded(ref s) if s.output == json!({"text": "hi"}))
    );
    assert!(other_tasks
        .iter()
        .all(|t| events.iter().any(|e| &e.envelope.aggregate_id == t)));

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn idempotent_submit_returns_the_same_task() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let server = start_service(config(&db, &nats)).await;
    let api = Api::new(base_url(&server));

    let body = json!({"task_type": "echo", "idempotency_key": "job-1"});
    let r1 = api.post("/api/v1/tasks", body.clone()).await;
    assert_eq!(r1.status(), 201);
    let a: serde_json::Value = r1.json().await.unwrap();
    let r2 = api.post("/api/v1/tasks", body.clone()).await;
    assert_eq!(r2.status(), 200);
    let b: serde_json::Value = r2.json().await.unwrap();
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["replayed"], true);
    // Another actor with the same key gets a task of its own.
    let r3 = api
        .http
        .post(format!("{}/api/v1/tasks", api.base))
        .header("X-Actor", "bob")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r3.status(), 201);
    let c: serde_json::Value = r3.json().await.unwrap();
    assert_ne!(a["id"], c["id"]);
    let pool = db.pool().await;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'TaskSubmitted'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(n, 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn readiness_reports_each_dependency_and_docs_render() {
    let db = TestDb::new().await;
    let mut nats = NatsServer::start().await;
    let server = start_service(config(&db, &nats)).await;
    let base = base_url(&server);
    let http = reqwest::Client::new();

    let live = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(live.status(), 200);

    let ready_body = || async {
        let r = http
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    wait_until(Duration::from_secs(10), "readiness", || async {
        ready_body().await.0 == 200
    })
    .await;
    let (_, body) = ready_body().await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["dependencies"]["postgres"]["status"], "up");
    assert_eq!(body["dependencies"]["nats"]["status"], "up");
    assert_eq!(body["dependencies"]["relay"]["status"], "up");

    nats.stop();
    wait_until(
        Duration::from_secs(10),
        "readiness to notice NATS is down",
        || async { ready_body().await.0 == 503 },
    )
    .await;
    let (_, body) = ready_body().await;
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["dependencies"]["nats"]["status"], "down");
    assert_eq!(body["dependencies"]["postgres"]["status"], "up");

    let docs = http.get(format!("{base}/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "Swagger UI page");
    let doc: serde_json::Value = http
        .get(format!("{base}/api-docs/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v1/agents",
        "/api/v1/agents/{id}",
        "/api/v1/agents/{id}/activate",
        "/api/v1/agents/{id}/deactivate",
        "/api/v1/agents/{id}/tasks",
        "/api/v1/tasks",
        "/api/v1/tasks/{id}/cancel",
        "/api/v1/tasks/{id}/start",
        "/api/v1/tasks/{id}/progress",
        "/api/v1/tasks/{id}/complete",
        "/api/v1/tasks/{id}/fail",
        "/health",
        "/health/ready",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    nats.resume().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_tokens_authenticate_and_name_the_actor() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let mut c = config(&db, &nats);
    c.api_tokens = Some("ops=0123456789abcdef0123".into());
    let server = start_service(c).await;
    let base = base_url(&server);
    let http = reqwest::Client::new();
    let body = json!({"task_type": "echo"});

    let r = http
        .post(format!("{base}/api/v1/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, p) = crate::support::problem(r).await;
    assert_eq!(status, 401);
    assert_eq!(p["code"], "unauthorized");
    let r = http
        .post(format!("{base}/api/v1/tasks"))
        .bearer_auth("wrong-token-wrong-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/api/v1/tasks"))
        .bearer_auth("0123456789abcdef0123")
        .header("X-Actor", "mallory")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let pool = db.pool().await;
    let actor: String = sqlx::query_scalar("SELECT metadata->>'actor' FROM events LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(actor, "ops", "the token names the actor, not X-Actor");
    // Heartbeats are authenticated too.
    let agent: serde_json::Value = http
        .post(format!("{base}/api/v1/agents"))
        .bearer_auth("0123456789abcdef0123")
        .json(&json!({"name": "a", "agent_type": "t"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let beat = format!(
        "{base}/api/v1/agents/{}/heartbeat",
        agent["id"].as_str().unwrap()
    );
    let r = http.post(&beat).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&beat)
        .bearer_auth("0123456789abcdef0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_flushes_the_outbox() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let mut c = config(&db, &nats);
    // Only notifications or shutdown wake the relay quickly.
    c.relay_poll_ms = 60_000;
    let server = start_service(c).await;
    let api = Api::new(base_url(&server));
    for _ in 0..25 {
        api.submit("echo").await;
    }
    server.shutdown().await.unwrap();
    let pool = db.pool().await;
    assert_eq!(
        outbox_len(&pool).await,
        0,
        "the relay flushed before stopping"
    );
    assert_eq!(
        assert_stream_matches_store(&pool, &nats.url()).await.len(),
        50
    );
}

#[tokio::test]
async fn aggregates_load_through_snapshots() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let mut c = config(&db, &nats);
    c.snapshot_every = 2;
    let server = start_service(c).await;
    let api = Api::new(base_url(&server));
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
    for p in [10, 20, 30, 40, 50] {
        api.ok(
            &format!("/api/v1/tasks/{task}/progress"),
            json!({"agent_id": agent, "percent": p}),
        )
        .await;
    }
    // Decisions after several snapshots still see the right state.
    let r = api
        .post(
            &format!("/api/v1/tasks/{task}/start"),
            json!({"agent_id": agent}),
        )
        .await;
    assert_eq!(r.status(), 409);
    let done = api
        .ok(
            &format!("/api/v1/tasks/{task}/complete"),
            json!({"agent_id": agent, "output": {}}),
        )
        .await;
    assert_eq!(done["version"], 10);
    let pool = db.pool().await;
    let snapshot: (i64, serde_json::Value) = sqlx::query_as(
        "SELECT last_sequence, payload::jsonb FROM snapshots WHERE aggregate_id = $1",
    )
    .bind(&task)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(snapshot.0 >= 8, "snapshot kept up: {}", snapshot.0);
    assert_eq!(snapshot.1["status"], "succeeded");
    assert_eq!(snapshot.1["agent_id"], agent);
    server.shutdown().await.unwrap();
}
