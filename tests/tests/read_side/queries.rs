//! Commands become visible through the query API; filters, pagination,
//! full-text search, read-your-writes, bad parameters, OpenAPI, metrics.

use std::collections::HashSet;

use serde_json::json;
use tests::System;

use crate::support::{problem, Apis};

#[tokio::test]
async fn commands_become_visible_through_the_query_api() {
    let sys = System::start().await;
    let api = Apis::new(&sys);

    let summariser = api.agent("summariser", "llm", &["nlp", "summarize"]).await;
    let scraper = api.agent("scraper", "web", &["http"]).await;
    let (_, v) = api
        .cmd(&format!("/api/v1/agents/{summariser}/activate"), json!({}))
        .await;

    // Read-your-writes: the version from the command is visible at once.
    let a = api
        .read(&format!("/api/v1/agents/{summariser}?min_version={v}"))
        .await;
    assert_eq!(a["status"], "active");
    assert_eq!(a["version"], v);
    assert_eq!(a["capabilities"], json!(["nlp", "summarize"]));

    let texts = [
        "summarize the quarterly revenue report",
        "translate the user manual into German",
        "summarize customer feedback about shipping delays",
        "fetch the pricing page and extract the plans",
    ];
    let mut ids = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let task_type = if text.starts_with("summarize") {
            "text.summarize"
        } else {
            "misc"
        };
        let (id, _) = api
            .cmd(
                "/api/v1/tasks",
                json!({"task_type": task_type, "priority": i, "input": {"text": text}}),
            )
            .await;
        ids.push(id);
    }
    // One task through its whole life on the summariser.
    let t = &ids[0];
    api.cmd(
        &format!("/api/v1/tasks/{t}/assign"),
        json!({"agent_id": summariser}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{t}/start"),
        json!({"agent_id": summariser}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{t}/progress"),
        json!({"agent_id": summariser, "percent": 60, "message": "reading"}),
    )
    .await;
    let (_, v) = api
        .cmd(
            &format!("/api/v1/tasks/{t}/complete"),
            json!({"agent_id": summariser, "output": {"summary": "up 4%"}}),
        )
        .await;
    // One cancelled, one running on the scraper.
    let (_, cancel_v) = api
        .cmd(
            &format!("/api/v1/tasks/{}/cancel", ids[1]),
            json!({"reason": "dup"}),
        )
        .await;
    api.cmd(
        &format!("/api/v1/tasks/{}/assign", ids[3]),
        json!({"agent_id": scraper}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{}/start", ids[3]),
        json!({"agent_id": scraper}),
    )
    .await;

    let task = api
        .read(&format!("/api/v1/tasks/{t}?min_version={v}"))
        .await;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["output"], json!({"summary": "up 4%"}));
    assert_eq!(task["progress"], 100);
    assert_eq!(task["agent_id"], summariser);
    assert!(task["started_at"].is_string() && task["finished_at"].is_string());
    let cancelled = api
        .read(&format!("/api/v1/tasks/{}?min_version={cancel_v}", ids[1]))
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancel_reason"], "dup");
    sys.caught_up().await;

    // History with actor and correlation ids.
    let events = api.read(&format!("/api/v1/tasks/{t}/events")).await;
    let types: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
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
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "anonymous" && e["correlation_id"].is_string()));

    // Filters.
    let page = api.read("/api/v1/tasks?status=queued").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["id"], ids[2]);
    let page = api.read("/api/v1/tasks?task_type=text.summarize").await;
    assert_eq!(page["total"], 2);
    let page = api.read(&format!("/api/v1/tasks?agent_id={scraper}")).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["status"], "running");
    let page = api.read("/api/v1/tasks?priority=3").await;
    assert_eq!(page["items"][0]["id"], ids[3]);
    let page = api
        .read(
            "/api/v1/tasks?created_after=2000-01-01T00:00:00Z&created_before=2000-01-02T00:00:00Z",
        )
        .await;
    assert_eq!(page["total"], 0);

    // Full-text search over the input (stemmed: "summaries" matches "summarize"? no;
    // "delays" matches "delay").
    let page = api.read("/api/v1/tasks?q=shipping%20delay").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["id"], ids[2]);
    let page = api.read("/api/v1/tasks?q=summarize%20-customer").await;
    let found: HashSet<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(found, HashSet::from([ids[0].as_str()]));

    // Agents: filters, load, tasks.
    let page = api.read("/api/v1/agents?capability=http").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["id"], scraper);
    assert_eq!(
        page["items"][0]["load"],
        json!({"assigned": 0, "running": 1})
    );
    assert_eq!(api.read("/api/v1/agents?status=active").await["total"], 1);
    assert_eq!(api.read("/api/v1/agents?agent_type=llm").await["total"], 1);
    let held = api
        .read(&format!("/api/v1/agents/{summariser}/tasks"))
        .await;
    assert_eq!(held["total"], 1);
    assert_eq!(held["items"][0]["id"], *t);

    // Stats.
    let stats = api.read("/api/v1/stats").await;
    assert_eq!(stats["total"], 4);
    assert_eq!(
        stats["by_status"],
        json!({"cancelled": 1, "queued": 1, "running": 1, "succeeded": 1})
    );
    assert_eq!(stats["by_type"], json!({"misc": 2, "text.summarize": 2}));

    sys.stop().await;
}

#[tokio::test]
async fn pagination_by_offset_and_cursor_covers_every_row_once() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let mut ids = HashSet::new();
    for i in 0..23 {
        ids.insert(
            api.cmd(
                "/api/v1/tasks",
                json!({"task_type": "echo", "input": {"i": i}}),
            )
            .await
            .0,
        );
    }
    sys.caught_up().await;
    let mut seen = Vec::new();
    for skip in (0..23).step_by(10) {
        let page = api
            .read(&format!("/api/v1/tasks?skip={skip}&limit=10"))
            .await;
        assert_eq!(page["total"], 23);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string()),
        );
    }
    assert_eq!(seen.len(), 23);
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), ids);

    let mut by_cursor = Vec::new();
    let mut path = "/api/v1/tasks?limit=7".to_string();
    loop {
        let page = api.read(&path).await;
        by_cursor.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/tasks?limit=7&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        by_cursor, seen,
        "cursor pages walk the same order as offset pages"
    );
    sys.stop().await;
}

#[tokio::test]
async fn bad_parameters_unknown_ids_and_unreached_versions_are_problems() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let (task, v) = api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;
    sys.caught_up().await;
    let missing = uuid::Uuid::new_v4();
    let cases: Vec<(String, u16, &str)> = vec![
        ("/api/v1/tasks?status=sleeping".into(), 400, "invalid_query"),
        ("/api/v1/tasks?limit=0".into(), 422, "validation_failed"),
        ("/api/v1/tasks?limit=ten".into(), 400, "invalid_query"),
        ("/api/v1/tasks?priority=12".into(), 422, "validation_failed"),
        (
            "/api/v1/tasks?created_after=yesterday".into(),
            400,
            "invalid_query",
        ),
        ("/api/v1/tasks?agent_id=nope".into(), 400, "invalid_query"),
        ("/api/v1/tasks?cursor=abc".into(), 400, "invalid_cursor"),
        ("/api/v1/tasks?colour=red".into(), 400, "invalid_query"),
        ("/api/v1/tasks/not-a-uuid".into(), 400, "invalid_id"),
        (format!("/api/v1/tasks/{missing}"), 404, "not_found"),
        (format!("/api/v1/tasks/{missing}/events"), 404, "not_found"),
        (format!("/api/v1/agents/{missing}"), 404, "not_found"),
        (format!("/api/v1/agents/{missing}/tasks"), 404, "not_found"),
        (
            format!("/api/v1/tasks/{task}?min_version=-1"),
            400,
            "invalid_query",
        ),
        (
            "/api/v1/stream?aggregate_type=robot".into(),
            422,
            "validation_failed",
        ),
        ("/api/v1/nothing".into(), 404, "not_found"),
    ];
    for (path, status, code) in cases {
        let (s, body) = problem(api.get(&path).await).await;
        assert_eq!(
            (s, body["code"].as_str().unwrap()),
            (status, code),
            "{path}: {body}"
        );
    }
    // A version the projection has not reached: bounded wait, then 503 + Retry-After.
    let started = std::time::Instant::now();
    let r = api
        .get(&format!("/api/v1/tasks/{task}?min_version={}", v + 5))
        .await;
    assert_eq!(r.headers()["retry-after"], "1");
    let (s, body) = problem(r).await;
    assert_eq!(
        (s, body["code"].as_str().unwrap()),
        (503, "version_not_reached")
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    // The query side refuses writes.
    let r = api
        .http
        .post(format!("{}/api/v1/tasks", api.query))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 405);
    sys.stop().await;
}

#[tokio::test]
async fn openapi_documents_every_route_and_docs_render() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let doc = api.read("/api-docs/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let routes = [
        ("/api/v1/agents", "get"),
        ("/api/v1/agents/{id}", "get"),
        ("/api/v1/agents/{id}/tasks", "get"),
        ("/api/v1/tasks", "get"),
        ("/api/v1/tasks/{id}", "get"),
        ("/api/v1/tasks/{id}/events", "get"),
        ("/api/v1/stats", "get"),
        ("/api/v1/tasks/{id}/state", "get"),
        ("/api/v1/audit/correlations/{id}", "get"),
        ("/api/v1/stream", "get"),
        ("/ws/tasks/{id}", "get"),
        ("/health", "get"),
        ("/health/ready", "get"),
        ("/api/v1/search/tasks", "get"),
        ("/api/v1/tasks/{id}/similar", "get"),
        ("/api/v1/agents/search", "get"),
        ("/api/v1/graph/tasks/{id}/lineage", "get"),
        ("/api/v1/graph/agents/{id}/neighborhood", "get"),
        ("/api/v1/graph/path", "get"),
    ];
    for (path, method) in routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} documented");
        assert!(op["responses"].is_object(), "{method} {path} has responses");
    }
    for schema in [
        "TaskView",
        "AgentView",
        "Problem",
        "StatsView",
        "TaskEventView",
        "EventEnvelope",
        "TaskState",
        "GraphView",
        "GraphNode",
        "GraphEdge",
        "TaskHit",
        "AgentHit",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    // Every $ref points at a defined schema.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
    let html = api.get("/docs/").await.text().await.unwrap();
    assert!(html.contains("swagger-ui"));
    let ready = api.read("/health/ready").await;
    assert_eq!(ready["status"], "ready");
    sys.stop().await;
}

/// Concurrent reads of single tasks are coalesced into shared statements;
/// each still gets its own task (the same id read twice at once included),
/// and an unknown id gets none.
#[tokio::test]
async fn concurrent_reads_of_one_task_each_are_answered_with_their_own_task() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (id, v) = api
            .cmd(
                "/api/v1/tasks",
                json!({"task_type": "echo", "input": {"text": format!("read {i}")}}),
            )
            .await;
        tasks.push((id.parse::<uuid::Uuid>().unwrap(), v, format!("read {i}")));
    }
    for (id, v, _) in &tasks {
        api.read(&format!("/api/v1/tasks/{id}?min_version={v}"))
            .await;
    }
    // One lane: every read that arrives while a statement is out waits for
    // the next one, so batches form.
    let reads = std::sync::Arc::new(query_service::reads::TaskReads::start(
        (*sys.pool.connect_options()).clone(),
        1,
    ));
    let unknown = (0..10).map(|_| uuid::Uuid::new_v4());
    let mut calls = Vec::new();
    for missing in unknown {
        for (id, _, text) in &tasks {
            let (reads, id, text) = (reads.clone(), *id, text.clone());
            calls.push(tokio::spawn(async move {
                let view = reads.task(id).await.expect("read").expect("task found");
                assert_eq!(view.id, id);
                assert_eq!(view.input["text"], text.as_str());
            }));
        }
        let (reads, id) = (reads.clone(), missing);
        calls.push(tokio::spawn(async move {
            assert!(reads.task(id).await.expect("read").is_none());
        }));
    }
    let n = calls.len() as u64;
    for call in calls {
        call.await.expect("every read answered correctly");
    }
    let statements = reads.statements();
    assert!(
        statements < n,
        "{n} concurrent reads took {statements} statements: none were batched"
    );
    // Over HTTP too, the same id read at once by many clients.
    let (id, _, text) = &tasks[0];
    let mut gets = Vec::new();
    for _ in 0..50 {
        let (http, url) = (api.http.clone(), format!("{}/api/v1/tasks/{id}", api.query));
        gets.push(tokio::spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }));
    }
    for get in gets {
        assert_eq!(get.await.unwrap()["input"]["text"], text.as_str());
    }
}
