//! Request and response bodies of the HTTP APIs. Requests refuse unknown
//! fields, so that a typo is a 422 and not a silently ignored setting.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    /// 1–255 characters.
    pub name: String,
    /// 1–100 characters, e.g. `llm`, `scraper`.
    pub agent_type: String,
    /// Capability labels the agent offers (1–64 characters each, at most 100).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Free-form configuration (a JSON object).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: Value,
    /// 1–1000; default 1.
    #[serde(default = "one")]
    pub max_concurrent_tasks: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgentRequest {
    pub name: Option<String>,
    pub capabilities: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    pub max_concurrent_tasks: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireAgentRequest {
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTaskRequest {
    /// 1–100 characters, e.g. `echo`, `http.fetch`.
    pub task_type: String,
    /// The task's input (any JSON value; default `{}`).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    /// 0 (lowest) to 9 (highest); default 5.
    #[serde(default = "five")]
    pub priority: u8,
    /// Run on this agent only. Set by `POST /api/v1/agents/{id}/tasks`.
    pub agent_id: Option<Uuid>,
    /// Queue the task at this time instead of now.
    pub schedule_at: Option<DateTime<Utc>>,
    /// Seconds the task may wait in the queue (1–604800).
    pub queue_timeout_secs: Option<u64>,
    /// Seconds one attempt may run (1–604800).
    pub execution_timeout_secs: Option<u64>,
    /// 0–100; default 3.
    #[serde(default = "three")]
    pub max_retries: u32,
    /// The same key from the same actor returns the same task instead of a new
    /// one (1–200 characters). Also accepted as the `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    pub parent_task_id: Option<Uuid>,
    /// Tasks that must succeed before this one is queued (at most 100).
    #[serde(default)]
    pub depends_on: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelTaskRequest {
    pub reason: Option<String>,
}

/// Manual (operator) assignment of a queued task to an agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignTaskRequest {
    pub agent_id: Uuid,
    /// Seconds the agent has to start the task (1–86400); default 30.
    #[serde(default = "thirty")]
    pub lease_secs: u32,
}

/// Identifies the agent reporting on a task it holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartTaskRequest {
    pub agent_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportProgressRequest {
    pub agent_id: Uuid,
    /// 0–100.
    pub percent: u8,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTaskRequest {
    pub agent_id: Uuid,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub output: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailTaskRequest {
    pub agent_id: Uuid,
    /// 1–10000 characters.
    pub error: String,
    /// Whether another attempt could succeed; default true.
    #[serde(default = "yes")]
    pub retryable: bool,
}

/// The answer to every accepted command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandAccepted {
    pub aggregate_type: String,
    pub id: Uuid,
    /// The aggregate's version (last event sequence) after this command; pass
    /// it as `If-Match` to make the next command conditional, or as
    /// `min_version` to a query to read your own write.
    pub version: i64,
    pub correlation_id: String,
    /// True when an idempotent submit found the task it had already created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// True when a progress report was not recorded as an event (too soon
    /// after the last one and too small a change); live subscribers still got it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub coalesced: bool,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAccepted {
    pub agent_id: Uuid,
    /// The agent's status now.
    pub status: String,
    /// Send the next heartbeat well within this many seconds.
    pub window_secs: u64,
}

/// Liveness answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    pub status: String,
}

/// One dependency's state in a readiness answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DependencyStatus {
    /// `up` or `down`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Readiness answer: `ready` only when every dependency is up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadinessStatus {
    /// `ready` or `not_ready`.
    pub status: String,
    pub dependencies: std::collections::BTreeMap<String, DependencyStatus>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}
fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn five() -> u8 {
    5
}
fn thirty() -> u32 {
    30
}
fn yes() -> bool {
    true
}
