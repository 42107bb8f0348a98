//! Bad input gets the documented 4xx problem+json, never a 5xx.

use reqwest::Method;
use serde_json::json;
use tests::*;

use crate::support::{problem, Api};

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    body: Option<String>,
    headers: Vec<(&'static str, String)>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: String,
    body: Option<&str>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path,
        body: body.map(str::to_string),
        headers: vec![],
        status,
        code,
    }
}

#[tokio::test]
async fn bad_requests_get_problem_answers() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let mut c = config(&db, &nats);
    c.max_body_bytes = 4096;
    let server = start_service(c).await;
    let api = Api::new(base_url(&server));
    let agent = api.create_agent(&["echo"]).await;
    let cancelled = api.submit("echo").await;
    api.ok(&format!("/api/v1/tasks/{cancelled}/cancel"), json!({}))
        .await;
    let missing = uuid::Uuid::new_v4();
    let post = Method::POST;

    let mut cases = vec![
        case(
            "malformed JSON",
            post.clone(),
            "/api/v1/tasks".into(),
            Some("{\"task_type\": "),
            400,
            "malformed_json",
        ),
        case(
            "not an object",
            post.clone(),
            "/api/v1/tasks".into(),
            Some("[1,2]"),
            422,
            "invalid_body",
        ),
        case(
            "unknown field",
            post.clone(),
            "/api/v1/tasks".into(),
            Some(r#"{"task_type":"echo","priorty":3}"#),
            422,
            "invalid_body",
        ),
        case(
            "wrong type",
            post.clone(),
            "/api/v1/tasks".into(),
            Some(r#"{"task_type":"echo","priority":"high"}"#),
            422,
            "invalid_body",
        ),
        case(
            "out of range for the type",
            post.clone(),
            "/api/v1/tasks".into(),
            Some(r#"{"task_type":"echo","priority":300}"#),
            422,
            "invalid_body",
        ),
        case(
            "missing required field",
            post.clone(),
            "/api/v1/agents".into(),
            Some(r#"{"name":"x"}"#),
            422,
            "invalid_body",
        ),
        case(
            "priority out of range",
            post.clone(),
            "/api/v1/tasks".into(),
            Some(r#"{"task_type":"echo","priority":10}"#),
            422,
            "validation_failed",
        ),
        case(
            "bad task type",
            post.clone(),
            "/api/v1/tasks".into(),
            Some(r#"{"task_type":"rm -rf"}"#),
            422,
            "validation_failed",
        ),
        case(
            "empty agent name",
            post.clone(),
            "/api/v1/agents".into(),
            Some(r#"{"name":" ","agent_type":"w"}"#),
            422,
            "validation_failed",
        ),
        case(
            "zero capacity",
            post.clone(),
            "/api/v1/agents".into(),
            Some(r#"{"name":"a","agent_type":"w","max_concurrent_tasks":0}"#),
            422,
            "validation_failed",
        ),
        case(
            "oversized body",
            post.clone(),
            "/api/v1/tasks".into(),
            Some(&format!(
                r#"{{"task_type":"echo","input":{{"blob":"{}"}}}}"#,
                "x".repeat(10_000)
            )),
            413,
            "payload_too_large",
        ),
        case(
            "invalid UUID in path",
            post.clone(),
            "/api/v1/tasks/not-a-uuid/cancel".into(),
            Some("{}"),
            400,
            "invalid_id",
        ),
        case(
            "invalid UUID in body",
            post.clone(),
            format!("/api/v1/tasks/{cancelled}/start"),
            Some(r#"{"agent_id":"nope"}"#),
            422,
            "invalid_body",
        ),
        case(
            "unknown task",
            post.clone(),
            format!("/api/v1/tasks/{missing}/cancel"),
            Some("{}"),
            404,
            "not_found",
        ),
        case(
            "unknown agent",
            post.clone(),
            format!("/api/v1/agents/{missing}/activate"),
            None,
            404,
            "not_found",
        ),
        case(
            "complete a cancelled task",
            post.clone(),
            format!("/api/v1/tasks/{cancelled}/complete"),
            Some(&format!(r#"{{"agent_id":"{agent}"}}"#)),
            409,
            "illegal_transition",
        ),
        case(
            "cancel twice",
            post.clone(),
            format!("/api/v1/tasks/{cancelled}/cancel"),
            None,
            409,
            "illegal_transition",
        ),
        case(
            "activate twice",
            post.clone(),
            format!("/api/v1/agents/{agent}/activate"),
            None,
            200,
            "",
        ),
        case(
            "activate an active agent",
            post.clone(),
            format!("/api/v1/agents/{agent}/activate"),
            None,
            409,
            "illegal_transition",
        ),
        case(
            "empty update",
            Method::PATCH,
            format!("/api/v1/agents/{agent}"),
            Some("{}"),
            422,
            "validation_failed",
        ),
        case(
            "unknown route",
            Method::GET,
            "/api/v1/nothing".into(),
            None,
            404,
            "not_found",
        ),
        case(
            "wrong method",
            Method::GET,
            "/api/v1/tasks".into(),
            None,
            405,
            "method_not_allowed",
        ),
    ];
    let mut no_ct = case(
        "missing content type",
        post.clone(),
        "/api/v1/tasks".into(),
        Some(r#"{"task_type":"echo"}"#),
        415,
        "unsupported_media_type",
    );
    no_ct.headers.push(("content-type", "text/plain".into()));
    cases.push(no_ct);
    let mut bad_if_match = case(
        "bad If-Match",
        post.clone(),
        format!("/api/v1/agents/{agent}/deactivate"),
        None,
        400,
        "invalid_header",
    );
    bad_if_match.headers.push(("if-match", "soon".into()));
    cases.push(bad_if_match);
    let mut stale = case(
        "stale If-Match",
        post.clone(),
        format!("/api/v1/agents/{agent}/deactivate"),
        None,
        409,
        "version_conflict",
    );
    stale.headers.push(("if-match", "\"1\"".into()));
    cases.push(stale);
    let mut bad_corr = case(
        "bad correlation id",
        post.clone(),
        "/api/v1/tasks".into(),
        Some(r#"{"task_type":"echo"}"#),
        400,
        "invalid_header",
    );
    bad_corr
        .headers
        .push(("x-correlation-id", "has spaces in it".into()));
    cases.push(bad_corr);
    let mut key_mismatch = case(
        "idempotency key mismatch",
        post.clone(),
        "/api/v1/tasks".into(),
        Some(r#"{"task_type":"echo","idempotency_key":"a"}"#),
        400,
        "invalid_header",
    );
    key_mismatch.headers.push(("idempotency-key", "b".into()));
    cases.push(key_mismatch);

    for c in cases {
        let mut req = api
            .http
            .request(c.method.clone(), format!("{}{}", api.base, c.path));
        if let Some(body) = c.body {
            if !c.headers.iter().any(|(k, _)| *k == "content-type") {
                req = req.header("content-type", "application/json");
            }
            req = req.body(body);
        }
        for (k, v) in &c.headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().as_u16() < 500, "{}: {}", c.name, r.status());
        if c.status == 200 {
            assert_eq!(r.status(), 200, "{}", c.name);
            continue;
        }
        let (status, body) = problem(r).await;
        assert_eq!(status.as_u16(), c.status, "{}: {body}", c.name);
        assert_eq!(body["code"], c.code, "{}: {body}", c.name);
    }
    server.shutdown().await.unwrap();
}
