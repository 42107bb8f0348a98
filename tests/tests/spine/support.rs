use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

/// A thin HTTP client for the command API.
pub struct Api {
    pub base: String,
    pub http: Client,
}

impl Api {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: Client::new(),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// POST that must succeed; returns the answer body.
    pub async fn ok(&self, path: &str, body: Value) -> Value {
        let r = self.post(path, body).await;
        let status = r.status();
        let body: Value = r.json().await.expect("json answer");
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    pub async fn create_agent(&self, caps: &[&str]) -> String {
        let body = self
            .ok(
                "/api/v1/agents",
                serde_json::json!({"name": "worker", "agent_type": "worker", "capabilities": caps, "max_concurrent_tasks": 4}),
            )
            .await;
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn submit(&self, task_type: &str) -> String {
        let body = self
            .ok(
                "/api/v1/tasks",
                serde_json::json!({"task_type": task_type, "input": {"n": 1}}),
            )
            .await;
        body["id"].as_str().expect("id").to_string()
    }
}

/// Reads a problem+json answer, checking its media type and status field.
pub async fn problem(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = r.json().await.expect("problem body is JSON");
    assert_eq!(ct, "application/problem+json", "{status}: {body}");
    assert_eq!(body["status"].as_u64(), Some(u64::from(status.as_u16())));
    assert!(
        body["code"].is_string() && body["title"].is_string(),
        "{body}"
    );
    (status, body)
}
