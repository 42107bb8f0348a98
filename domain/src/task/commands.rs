use chrono::{DateTime, Utc};
use schemas::events::TimeoutPhase;
use serde_json::Value;
use uuid::Uuid;

/// Everything that can be asked of a task. Commands that depend on the time
/// carry it (`now`, deadlines), so the aggregate stays pure.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskCommand {
    SubmitTask(SubmitTask),
    /// Dependencies are met or the schedule time has come.
    QueueTask,
    AssignTask {
        agent_id: Uuid,
        lease_expires_at: DateTime<Utc>,
    },
    StartTask {
        agent_id: Uuid,
    },
    /// Recorded at most once a second per task unless the percentage jumps
    /// by 10 or more (or reaches 100); otherwise it yields no event.
    ReportProgress {
        agent_id: Uuid,
        percent: u8,
        message: Option<String>,
        now: DateTime<Utc>,
    },
    CompleteTask {
        agent_id: Uuid,
        output: Value,
    },
    /// `agent_id` is the reporting agent; `None` when the system fails the
    /// task (e.g. a dependency failed).
    FailTask {
        agent_id: Option<Uuid>,
        error: String,
        retryable: bool,
    },
    ScheduleRetry {
        not_before: DateTime<Utc>,
    },
    CancelTask {
        reason: Option<String>,
    },
    TimeOutTask {
        phase: TimeoutPhase,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubmitTask {
    /// The id the task will have, to refuse a dependency on itself.
    pub task_id: Uuid,
    pub task_type: String,
    pub input: Value,
    pub required_capabilities: Vec<String>,
    pub priority: u8,
    pub target_agent_id: Option<Uuid>,
    pub schedule_at: Option<DateTime<Utc>>,
    pub queue_timeout_secs: Option<u64>,
    pub execution_timeout_secs: Option<u64>,
    pub max_retries: u32,
    pub idempotency_key: Option<String>,
    pub parent_task_id: Option<Uuid>,
    pub depends_on: Vec<Uuid>,
    /// When the command is decided; a `schedule_at` not after it queues at once.
    pub now: DateTime<Utc>,
}
