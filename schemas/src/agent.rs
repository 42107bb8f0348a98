//! The protocol between SutazAI and its agents over NATS: what the
//! coordinator sends an agent, and the heartbeat an agent sends.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// Sent on `sutazai.agents.<agent_id>.tasks.assigned` when a task is
/// assigned to the agent. The agent must start it before `lease_expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    pub task_id: Uuid,
    pub attempt: u32,
    pub task_type: String,
    #[schema(value_type = Object)]
    pub input: Value,
    pub lease_expires_at: DateTime<Utc>,
    pub execution_timeout_secs: Option<u64>,
    /// When the coordinator sent it (for latency measurements).
    pub sent_at: DateTime<Utc>,
}

/// Sent on `sutazai.agents.<agent_id>.tasks.cancelled` when a task the agent
/// holds is cancelled: stop working on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cancellation {
    pub task_id: Uuid,
    pub reason: Option<String>,
}

/// An agent's heartbeat (`POST /api/v1/agents/{id}/heartbeat` or
/// `sutazai.agents.<agent_id>.heartbeat`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Tasks the agent is working on now.
    #[serde(default)]
    pub load: Option<u32>,
}

/// Every progress report, recorded or coalesced, on
/// `sutazai.progress.task.<task_id>` (core NATS, not stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProgressUpdate {
    pub task_id: Uuid,
    pub agent_id: Uuid,
    pub percent: u8,
    pub message: Option<String>,
    pub at: DateTime<Utc>,
    /// Whether it was also recorded as an event.
    pub recorded: bool,
}
