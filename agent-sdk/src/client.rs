//! The HTTP calls an agent makes to the command and query APIs.

use schemas::agent::{Assignment, Heartbeat};
use schemas::query::{Page, TaskView};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{AgentOptions, TaskError};

#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The API refused the call (status and problem body).
    #[error("{status}: {body}")]
    Refused { status: u16, body: String },
    #[error("NATS: {0}")]
    Nats(String),
}

/// A cheap-to-clone client of both APIs.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    command: String,
    query: String,
}

impl Client {
    /// `api_token` is sent as `Authorization: Bearer` when the command
    /// service has API tokens configured.
    pub fn new(command_url: &str, query_url: &str, api_token: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(v) = api_token
            .and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .default_headers(headers)
            .build()
            .unwrap_or_default();
        Self {
            http,
            command: command_url.trim_end_matches('/').to_string(),
            query: query_url.trim_end_matches('/').to_string(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, SdkError> {
        let r = self
            .http
            .post(format!("{}{path}", self.command))
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        if status.is_success() {
            Ok(r.json().await.unwrap_or(Value::Null))
        } else {
            Err(SdkError::Refused {
                status: status.as_u16(),
                body: r.text().await.unwrap_or_default(),
            })
        }
    }

    pub async fn register(&self, o: &AgentOptions) -> Result<Uuid, SdkError> {
        let body = self
            .post(
                "/api/v1/agents",
                json!({"name": o.name, "agent_type": o.agent_type, "capabilities": o.capabilities,
                       "config": o.config, "max_concurrent_tasks": o.max_concurrent_tasks}),
            )
            .await?;
        body["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| SdkError::Refused {
                status: 200,
                body: format!("no agent id in {body}"),
            })
    }

    /// Activates the agent. An agent that is already active is fine, and so
    /// is one marked unhealthy (restarted after it missed its heartbeats):
    /// the heartbeats that follow have the coordinator mark it recovered.
    pub async fn activate(&self, agent_id: Uuid) -> Result<(), SdkError> {
        match self
            .post(&format!("/api/v1/agents/{agent_id}/activate"), json!({}))
            .await
        {
            Err(SdkError::Refused { status: 409, body })
                if body.contains("that is active") || body.contains("that is unhealthy") =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    pub async fn heartbeat(&self, agent_id: Uuid, load: u32) -> Result<(), SdkError> {
        let hb = Heartbeat { load: Some(load) };
        self.post(
            &format!("/api/v1/agents/{agent_id}/heartbeat"),
            serde_json::to_value(hb).unwrap_or_default(),
        )
        .await
        .map(|_| ())
    }

    pub async fn start(&self, task_id: Uuid, agent_id: Uuid) -> Result<(), SdkError> {
        self.post(
            &format!("/api/v1/tasks/{task_id}/start"),
            json!({"agent_id": agent_id}),
        )
        .await
        .map(|_| ())
    }

    pub async fn report_progress(
        &self,
        task_id: Uuid,
        agent_id: Uuid,
        percent: u8,
        message: Option<&str>,
    ) -> Result<(), SdkError> {
        self.post(
            &format!("/api/v1/tasks/{task_id}/progress"),
            json!({"agent_id": agent_id, "percent": percent, "message": message}),
        )
        .await
        .map(|_| ())
    }

    pub async fn complete(
        &self,
        task_id: Uuid,
        agent_id: Uuid,
        output: &Value,
    ) -> Result<(), SdkError> {
        self.post(
            &format!("/api/v1/tasks/{task_id}/complete"),
            json!({"agent_id": agent_id, "output": output}),
        )
        .await
        .map(|_| ())
    }

    pub async fn fail(
        &self,
        task_id: Uuid,
        agent_id: Uuid,
        err: &TaskError,
    ) -> Result<(), SdkError> {
        let error = if err.message.trim().is_empty() {
            "failed"
        } else {
            &err.message
        };
        self.post(
            &format!("/api/v1/tasks/{task_id}/fail"),
            json!({"agent_id": agent_id, "error": error, "retryable": err.retryable}),
        )
        .await
        .map(|_| ())
    }

    /// The tasks assigned to this agent and not yet started, from the query API.
    pub async fn assignments(&self, agent_id: Uuid) -> Result<Vec<Assignment>, SdkError> {
        let r = self
            .http
            .get(format!(
                "{}/api/v1/agents/{agent_id}/tasks?status=assigned&limit=500",
                self.query
            ))
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(SdkError::Refused {
                status: r.status().as_u16(),
                body: r.text().await.unwrap_or_default(),
            });
        }
        let page: Page<TaskView> = r.json().await?;
        Ok(page
            .items
            .into_iter()
            .filter(|t| t.agent_id == Some(agent_id))
            .filter_map(|t| {
                Some(Assignment {
                    task_id: t.id,
                    attempt: t.attempt.max(0) as u32,
                    task_type: t.task_type,
                    input: t.input,
                    lease_expires_at: t.lease_expires_at?,
                    execution_timeout_secs: t.execution_timeout_secs.map(|s| s.max(0) as u64),
                    sent_at: chrono::Utc::now(),
                })
            })
            .collect())
    }
}
