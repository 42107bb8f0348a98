use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

/// HTTP helpers over both APIs.
pub struct Apis {
    pub command: String,
    pub query: String,
    pub http: Client,
}

impl Apis {
    pub fn new(sys: &tests::System) -> Self {
        Self {
            command: sys.command_url(),
            query: sys.query_url(),
            http: Client::new(),
        }
    }

    /// The command API alone (no query service running).
    pub fn commands(command: &command_service::Server) -> Self {
        Self {
            command: format!("http://{}", command.addr),
            query: String::new(),
            http: Client::new(),
        }
    }

    /// A command that must succeed; returns (id, version).
    pub async fn cmd(&self, path: &str, body: Value) -> (String, i64) {
        let r = self
            .http
            .post(format!("{}{path}", self.command))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {body}");
        (
            body["id"].as_str().unwrap().to_string(),
            body["version"].as_i64().unwrap(),
        )
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.query))
            .send()
            .await
            .unwrap()
    }

    /// A read that must succeed.
    pub async fn read(&self, path: &str) -> Value {
        let r = self.get(path).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    pub async fn agent(&self, name: &str, agent_type: &str, caps: &[&str]) -> String {
        self.cmd(
            "/api/v1/agents",
            json!({"name": name, "agent_type": agent_type, "capabilities": caps, "max_concurrent_tasks": 3}),
        )
        .await
        .0
    }
}

/// A problem+json answer's status and body.
pub async fn problem(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(ct, "application/problem+json", "{status} {body}");
    (status, body)
}

/// The live counters of the projection `name` among `projectors`.
pub fn projection_status(
    projectors: &projectors::Projectors,
    name: &str,
) -> std::sync::Arc<projectors::runtime::ProjectionStatus> {
    projectors
        .statuses
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s.clone())
        .unwrap()
}
