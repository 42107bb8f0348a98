//! Event payloads: the contract between the command side and every reader.
//!
//! Stored (postgres-es) and published as serde's externally tagged form,
//! `{"TaskSubmitted": {...}}`, with the type name and version also stored beside
//! the payload. A change that is not backwards compatible bumps the version of
//! that event and adds an upcaster in [`crate::upcast`]; stored events are never
//! rewritten.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// Current version of every event type. Each event names its own version so
/// that one can move without the others.
pub const V1: &str = "1.0";

/// Events of the `agent` aggregate. Heartbeats are deliberately not events:
/// only health transitions are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub enum AgentEvent {
    AgentCreated(AgentCreated),
    AgentUpdated(AgentUpdated),
    AgentActivated(AgentActivated),
    AgentDeactivated(AgentDeactivated),
    AgentMarkedUnhealthy(AgentMarkedUnhealthy),
    AgentRecovered(AgentRecovered),
    AgentRetired(AgentRetired),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentCreated {
    pub name: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub config: Value,
    pub max_concurrent_tasks: u32,
}

/// Only the fields that changed are present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_tasks: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentActivated {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentDeactivated {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentMarkedUnhealthy {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentRecovered {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentRetired {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Events of the `task` aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub enum TaskEvent {
    TaskSubmitted(TaskSubmitted),
    TaskScheduled(TaskScheduled),
    TaskQueued(TaskQueued),
    TaskAssigned(TaskAssigned),
    TaskStarted(TaskStarted),
    TaskProgressReported(TaskProgressReported),
    TaskSucceeded(TaskSucceeded),
    TaskFailed(TaskFailed),
    TaskRetryScheduled(TaskRetryScheduled),
    TaskCancelled(TaskCancelled),
    TaskTimedOut(TaskTimedOut),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskSubmitted {
    pub task_type: String,
    pub input: Value,
    pub required_capabilities: Vec<String>,
    /// 0 (lowest) to 9 (highest).
    pub priority: u8,
    pub target_agent_id: Option<Uuid>,
    pub schedule_at: Option<DateTime<Utc>>,
    /// Longest wait in the queue before the task times out; none = forever.
    pub queue_timeout_secs: Option<u64>,
    /// Longest run once started; none = no limit.
    pub execution_timeout_secs: Option<u64>,
    pub max_retries: u32,
    pub idempotency_key: Option<String>,
    pub parent_task_id: Option<Uuid>,
    pub depends_on: Vec<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskScheduled {
    pub schedule_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskQueued {
    /// The attempt this queueing is for, starting at 1.
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskAssigned {
    pub agent_id: Uuid,
    pub attempt: u32,
    /// The agent must start the task before this time.
    pub lease_expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskStarted {
    pub agent_id: Uuid,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskProgressReported {
    pub agent_id: Uuid,
    /// 0 to 100.
    pub percent: u8,
    pub message: Option<String>,
    /// When the agent reported it (absent in events written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskSucceeded {
    pub agent_id: Uuid,
    pub attempt: u32,
    pub output: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskFailed {
    /// The agent whose attempt failed; none when the task failed before it was
    /// assigned (e.g. a dependency failed).
    pub agent_id: Option<Uuid>,
    pub attempt: u32,
    pub error: String,
    /// Whether another attempt could succeed (the retry policy decides).
    pub retryable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskRetryScheduled {
    /// The attempt that will run next.
    pub attempt: u32,
    pub not_before: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskCancelled {
    pub reason: Option<String>,
    /// The agent that held the task when it was cancelled, so it can be told.
    pub agent_id: Option<Uuid>,
}

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPhase {
    /// Queued for longer than the queue timeout.
    Queue,
    /// Assigned but not started within the lease.
    Lease,
    /// Running for longer than the execution timeout.
    Execution,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskTimedOut {
    pub phase: TimeoutPhase,
    pub attempt: u32,
    pub agent_id: Option<Uuid>,
}

impl AgentEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::AgentCreated(_) => "AgentCreated",
            Self::AgentUpdated(_) => "AgentUpdated",
            Self::AgentActivated(_) => "AgentActivated",
            Self::AgentDeactivated(_) => "AgentDeactivated",
            Self::AgentMarkedUnhealthy(_) => "AgentMarkedUnhealthy",
            Self::AgentRecovered(_) => "AgentRecovered",
            Self::AgentRetired(_) => "AgentRetired",
        }
    }

    pub fn event_version(&self) -> &'static str {
        V1
    }
}

impl TaskEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::TaskSubmitted(_) => "TaskSubmitted",
            Self::TaskScheduled(_) => "TaskScheduled",
            Self::TaskQueued(_) => "TaskQueued",
            Self::TaskAssigned(_) => "TaskAssigned",
            Self::TaskStarted(_) => "TaskStarted",
            Self::TaskProgressReported(_) => "TaskProgressReported",
            Self::TaskSucceeded(_) => "TaskSucceeded",
            Self::TaskFailed(_) => "TaskFailed",
            Self::TaskRetryScheduled(_) => "TaskRetryScheduled",
            Self::TaskCancelled(_) => "TaskCancelled",
            Self::TaskTimedOut(_) => "TaskTimedOut",
        }
    }

    pub fn event_version(&self) -> &'static str {
        V1
    }
}

#[cfg(feature = "cqrs")]
mod cqrs_impl {
    use super::{AgentEvent, TaskEvent};

    impl cqrs_es::DomainEvent for AgentEvent {
        fn event_type(&self) -> String {
            AgentEvent::event_type(self).to_string()
        }
        fn event_version(&self) -> String {
            AgentEvent::event_version(self).to_string()
        }
    }

    impl cqrs_es::DomainEvent for TaskEvent {
        fn event_type(&self) -> String {
            TaskEvent::event_type(self).to_string()
        }
        fn event_version(&self) -> String {
            TaskEvent::event_version(self).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_form_is_externally_tagged_with_the_event_type() {
        let event = TaskEvent::TaskQueued(TaskQueued { attempt: 1 });
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value, json!({"TaskQueued": {"attempt": 1}}));
        assert_eq!(event.event_type(), "TaskQueued");
        let back: TaskEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
    }
}
