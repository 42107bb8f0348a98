//! An aggregate's state folded from its events: what audits ask ("what was
//! task X at version 4 / at 14:02?"). A pure fold of the wire events, used by
//! the replay tool (over the event store) and the query API (over the
//! projected history).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::events::{AgentEvent, TaskEvent, TimeoutPhase};
use crate::status::{AgentStatus, TaskStatus};

/// A task as of some version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskState {
    /// The sequence of the last event folded.
    pub version: i64,
    pub status: Option<TaskStatus>,
    pub task_type: String,
    #[schema(value_type = Object)]
    pub input: Value,
    pub priority: u8,
    pub required_capabilities: Vec<String>,
    pub target_agent_id: Option<Uuid>,
    /// The agent holding or last holding the task.
    pub agent_id: Option<Uuid>,
    pub attempt: u32,
    pub max_retries: u32,
    pub progress: Option<u8>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    /// One line per failed or timed-out attempt.
    pub failures: Vec<String>,
    pub cancel_reason: Option<String>,
    pub depends_on: Vec<Uuid>,
    pub parent_task_id: Option<Uuid>,
}

impl TaskState {
    pub fn apply(&mut self, sequence: i64, event: &TaskEvent) {
        self.version = sequence;
        match event {
            TaskEvent::TaskSubmitted(e) => {
                self.status = Some(TaskStatus::Submitted);
                self.task_type = e.task_type.clone();
                self.input = e.input.clone();
                self.priority = e.priority;
                self.required_capabilities = e.required_capabilities.clone();
                self.target_agent_id = e.target_agent_id;
                self.attempt = 1;
                self.max_retries = e.max_retries;
                self.depends_on = e.depends_on.clone();
                self.parent_task_id = e.parent_task_id;
            }
            TaskEvent::TaskScheduled(_) => self.status = Some(TaskStatus::Scheduled),
            TaskEvent::TaskQueued(e) => {
                self.status = Some(TaskStatus::Queued);
                self.attempt = e.attempt;
            }
            TaskEvent::TaskAssigned(e) => {
                self.status = Some(TaskStatus::Assigned);
                self.agent_id = Some(e.agent_id);
                self.attempt = e.attempt;
            }
            TaskEvent::TaskStarted(_) => {
                self.status = Some(TaskStatus::Running);
                self.progress = Some(0);
            }
            TaskEvent::TaskProgressReported(e) => self.progress = Some(e.percent),
            TaskEvent::TaskSucceeded(e) => {
                self.status = Some(TaskStatus::Succeeded);
                self.output = Some(e.output.clone());
                self.progress = Some(100);
                self.error = None;
            }
            TaskEvent::TaskFailed(e) => {
                self.status = Some(TaskStatus::Failed);
                self.error = Some(e.error.clone());
                self.failures
                    .push(format!("attempt {}: {}", e.attempt, e.error));
            }
            TaskEvent::TaskRetryScheduled(e) => {
                self.status = Some(TaskStatus::Scheduled);
                self.attempt = e.attempt;
            }
            TaskEvent::TaskCancelled(e) => {
                self.status = Some(TaskStatus::Cancelled);
                self.cancel_reason = e.reason.clone();
            }
            TaskEvent::TaskTimedOut(e) => {
                self.status = Some(TaskStatus::TimedOut);
                let phase = match e.phase {
                    TimeoutPhase::Queue => "queue",
                    TimeoutPhase::Lease => "lease",
                    TimeoutPhase::Execution => "execution",
                };
                let error = format!("timed out ({phase} timeout)");
                self.failures
                    .push(format!("attempt {}: {error}", e.attempt));
                self.error = Some(error);
            }
        }
    }
}

/// An agent as of some version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentState {
    pub version: i64,
    pub status: Option<AgentStatus>,
    pub name: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    #[schema(value_type = Object)]
    pub config: Value,
    pub max_concurrent_tasks: u32,
    pub health_reason: Option<String>,
}

impl AgentState {
    pub fn apply(&mut self, sequence: i64, event: &AgentEvent) {
        self.version = sequence;
        match event {
            AgentEvent::AgentCreated(e) => {
                self.status = Some(AgentStatus::Inactive);
                self.name = e.name.clone();
                self.agent_type = e.agent_type.clone();
                self.capabilities = e.capabilities.clone();
                self.config = e.config.clone();
                self.max_concurrent_tasks = e.max_concurrent_tasks;
            }
            AgentEvent::AgentUpdated(e) => {
                if let Some(v) = &e.name {
                    self.name = v.clone();
                }
                if let Some(v) = &e.capabilities {
                    self.capabilities = v.clone();
                }
                if let Some(v) = &e.config {
                    self.config = v.clone();
                }
                if let Some(v) = e.max_concurrent_tasks {
                    self.max_concurrent_tasks = v;
                }
            }
            AgentEvent::AgentActivated(_) => self.status = Some(AgentStatus::Active),
            AgentEvent::AgentDeactivated(_) => self.status = Some(AgentStatus::Inactive),
            AgentEvent::AgentMarkedUnhealthy(e) => {
                self.status = Some(AgentStatus::Unhealthy);
                self.health_reason = Some(e.reason.clone());
            }
            AgentEvent::AgentRecovered(_) => {
                self.status = Some(AgentStatus::Active);
                self.health_reason = None;
            }
            AgentEvent::AgentRetired(_) => self.status = Some(AgentStatus::Retired),
        }
    }
}
