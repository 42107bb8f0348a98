//! Response bodies of the query API (read models as served).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// One page of a list, with the total that matches the filters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Rows matching the filters (all pages).
    pub total: i64,
    pub skip: i64,
    pub limit: i64,
    /// Pass as `cursor` to get the next page (keyset pagination); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Tasks an agent holds right now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentLoad {
    pub assigned: i64,
    pub running: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub id: Uuid,
    /// The aggregate version this row reflects.
    pub version: i64,
    pub name: String,
    pub agent_type: String,
    /// `inactive`, `active`, `unhealthy` or `retired`.
    pub status: String,
    pub capabilities: Vec<String>,
    #[schema(value_type = Object)]
    pub config: Value,
    pub max_concurrent_tasks: i32,
    pub load: AgentLoad,
    pub health_reason: Option<String>,
    pub last_health_change_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// One task as served. With the `sqlx` feature it is read straight from the
/// `tasks` row: the columns and fields share names and types.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct TaskView {
    pub id: Uuid,
    /// The aggregate version this row reflects.
    pub version: i64,
    pub task_type: String,
    /// `submitted`, `scheduled`, `queued`, `assigned`, `running`, `succeeded`,
    /// `failed`, `cancelled` or `timed_out`.
    pub status: String,
    pub priority: i16,
    pub required_capabilities: Vec<String>,
    pub target_agent_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    pub progress: Option<i16>,
    pub progress_message: Option<String>,
    pub attempt: i32,
    pub max_retries: i32,
    /// Every failed or timed-out attempt: `{attempt, agent_id, error, retryable, at}`.
    #[schema(value_type = Vec<Object>)]
    pub failures: Value,
    pub schedule_at: Option<DateTime<Utc>>,
    pub queue_timeout_secs: Option<i64>,
    pub execution_timeout_secs: Option<i64>,
    pub idempotency_key: Option<String>,
    pub parent_task_id: Option<Uuid>,
    pub depends_on: Vec<Uuid>,
    pub submitted_by: String,
    pub correlation_id: String,
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One event in a task's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskEventView {
    pub task_id: Uuid,
    pub sequence: i64,
    pub stream_sequence: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub request_id: String,
    pub agent_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// Counts and durations for one (task type, status).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatsRow {
    pub task_type: String,
    pub status: String,
    pub count: i64,
    /// Mean seconds from start to finish, over finished tasks that started.
    pub avg_run_secs: Option<f64>,
    pub max_run_secs: Option<f64>,
    /// Mean seconds from queued to assigned (or finished when never assigned).
    pub avg_wait_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatsView {
    pub total: i64,
    /// Count per status over all types.
    pub by_status: std::collections::BTreeMap<String, i64>,
    /// Count per type over all statuses.
    pub by_type: std::collections::BTreeMap<String, i64>,
    pub rows: Vec<StatsRow>,
}

/// One node of a relationship graph. `id` is `<label>:<key>`, e.g.
/// `Task:6f1c…`, `Capability:text.summarize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GraphNode {
    pub id: String,
    /// `Agent`, `Task`, `Capability`, `TaskType` or `Actor`.
    pub label: String,
    /// The agent/task id, capability name, task type or actor.
    pub key: String,
    /// Properties kept on the node (`status`, `task_type`, `name`, …).
    #[schema(value_type = Object)]
    pub properties: serde_json::Map<String, Value>,
}

/// One relationship: `from` -[`rel`]-> `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GraphEdge {
    pub from: String,
    /// `HAS_CAPABILITY`, `REQUIRES`, `OF_TYPE`, `SUBMITTED`, `ASSIGNED_TO`,
    /// `CHILD_OF` or `DEPENDS_ON`.
    pub rel: String,
    pub to: String,
    /// `{attempt}` on `ASSIGNED_TO`; empty otherwise.
    #[schema(value_type = Object)]
    pub properties: serde_json::Map<String, Value>,
}

/// The answer of every graph endpoint: nodes and edges, sorted by id, each once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GraphView {
    /// Where the traversal started (`<label>:<key>`).
    pub root: String,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// Node ids by role, for lineage (`ancestors`, `descendants`,
    /// `dependencies`, `dependents`), neighborhood (`capabilities`, `tasks`,
    /// `coworkers`) and path (`path`, in order).
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// True when the node limit cut the traversal short.
    pub truncated: bool,
}

/// A task found by search.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskHit {
    pub id: Uuid,
    /// Higher is better. Cosine similarity (semantic), BM25 (text) or
    /// reciprocal-rank fusion (hybrid); compare only within one answer.
    pub score: f32,
    pub task_type: String,
    pub status: String,
    pub priority: i64,
    pub agent_id: Option<Uuid>,
    pub parent_task_id: Option<Uuid>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The aggregate version the indexed point reflects.
    pub version: i64,
    /// The text that was embedded.
    pub text: String,
}

/// An agent found by search.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentHit {
    pub id: Uuid,
    pub score: f32,
    pub name: String,
    pub agent_type: String,
    pub status: String,
    pub capabilities: Vec<String>,
    pub version: i64,
    pub text: String,
}

/// Search results, best first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResults<T> {
    /// `semantic`, `hybrid` or `text`.
    pub mode: String,
    /// `edge` (Qdrant Edge in process) or `qdrant` (a Qdrant server).
    pub backend: String,
    pub items: Vec<T>,
}
