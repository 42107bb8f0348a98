use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use schemas::events::{
    TaskAssigned, TaskCancelled, TaskEvent, TaskFailed, TaskProgressReported, TaskQueued,
    TaskRetryScheduled, TaskScheduled, TaskStarted, TaskSubmitted, TaskSucceeded, TaskTimedOut,
    TimeoutPhase,
};
use schemas::status::TaskStatus;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::{SubmitTask, TaskCommand};
use crate::validate;
use crate::DomainError;

const TASK: &str = "task";

/// State a task's decisions need. `status` is `None` until it is submitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub status: Option<TaskStatus>,
    pub task_type: String,
    pub priority: u8,
    pub required_capabilities: Vec<String>,
    pub target_agent_id: Option<Uuid>,
    pub max_retries: u32,
    /// The current attempt, from 1.
    pub attempt: u32,
    /// The agent holding the task while it is assigned or running.
    pub agent_id: Option<Uuid>,
    /// Whether the last failure or timeout may be retried.
    pub retryable: bool,
    pub depends_on: Vec<Uuid>,
    pub idempotency_key: Option<String>,
    /// The last recorded progress report, for coalescing.
    #[serde(default)]
    pub last_progress: Option<(DateTime<Utc>, u8)>,
}

/// Progress reports closer together than this are coalesced…
const PROGRESS_INTERVAL_MS: i64 = 1000;
/// …unless the percentage moved by at least this much.
const PROGRESS_JUMP: u8 = 10;

impl Aggregate for Task {
    const TYPE: &'static str = schemas::subjects::TASK;
    type Command = TaskCommand;
    type Event = TaskEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: TaskCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: TaskEvent) {
        match event {
            TaskEvent::TaskSubmitted(e) => {
                self.status = Some(TaskStatus::Submitted);
                self.task_type = e.task_type;
                self.priority = e.priority;
                self.required_capabilities = e.required_capabilities;
                self.target_agent_id = e.target_agent_id;
                self.max_retries = e.max_retries;
                self.attempt = 1;
                self.depends_on = e.depends_on;
                self.idempotency_key = e.idempotency_key;
            }
            TaskEvent::TaskScheduled(_) => self.status = Some(TaskStatus::Scheduled),
            TaskEvent::TaskQueued(_) => {
                self.status = Some(TaskStatus::Queued);
                self.agent_id = None;
            }
            TaskEvent::TaskAssigned(e) => {
                self.status = Some(TaskStatus::Assigned);
                self.agent_id = Some(e.agent_id);
            }
            TaskEvent::TaskStarted(_) => {
                self.status = Some(TaskStatus::Running);
                self.last_progress = None;
            }
            TaskEvent::TaskProgressReported(e) => {
                if let Some(at) = e.reported_at {
                    self.last_progress = Some((at, e.percent));
                }
            }
            TaskEvent::TaskSucceeded(_) => self.status = Some(TaskStatus::Succeeded),
            TaskEvent::TaskFailed(e) => {
                self.status = Some(TaskStatus::Failed);
                self.retryable = e.retryable;
            }
            TaskEvent::TaskRetryScheduled(e) => {
                self.status = Some(TaskStatus::Scheduled);
                self.attempt = e.attempt;
                self.agent_id = None;
            }
            TaskEvent::TaskCancelled(_) => self.status = Some(TaskStatus::Cancelled),
            TaskEvent::TaskTimedOut(e) => {
                self.status = Some(TaskStatus::TimedOut);
                // Nobody took the task in time: another attempt would not help.
                self.retryable = e.phase != TimeoutPhase::Queue;
            }
        }
    }
}

impl Task {
    /// Decides the events a command yields, or why it is refused.
    fn decide(&self, command: TaskCommand) -> Result<Vec<TaskEvent>, DomainError> {
        use TaskStatus::*;
        let status = match (self.status, &command) {
            (None, TaskCommand::SubmitTask(s)) => return submit(s),
            (None, _) => return Err(DomainError::NotFound(TASK)),
            (Some(s), _) => s,
        };
        let refuse = |action: &'static str| {
            Err(DomainError::IllegalTransition {
                aggregate: "a task",
                action,
                status: status.to_string(),
            })
        };
        let event = match command {
            TaskCommand::SubmitTask(_) => return Err(DomainError::AlreadyExists(TASK)),
            TaskCommand::QueueTask => match status {
                Submitted | Scheduled => TaskEvent::TaskQueued(TaskQueued {
                    attempt: self.attempt,
                }),
                _ => return refuse("queue"),
            },
            TaskCommand::AssignTask {
                agent_id,
                lease_expires_at,
            } => match status {
                Queued => {
                    if let Some(target) = self.target_agent_id.filter(|t| *t != agent_id) {
                        return Err(DomainError::NotTargetAgent {
                            target,
                            offered: agent_id,
                        });
                    }
                    TaskEvent::TaskAssigned(TaskAssigned {
                        agent_id,
                        attempt: self.attempt,
                        lease_expires_at,
                    })
                }
                _ => return refuse("assign"),
            },
            TaskCommand::StartTask { agent_id } => match status {
                Assigned => {
                    self.check_holder(agent_id)?;
                    TaskEvent::TaskStarted(TaskStarted {
                        agent_id,
                        attempt: self.attempt,
                    })
                }
                _ => return refuse("start"),
            },
            TaskCommand::ReportProgress {
                agent_id,
                percent,
                message,
                now,
            } => match status {
                Running => {
                    self.check_holder(agent_id)?;
                    if percent > 100 {
                        return Err(DomainError::invalid("percent", "must be 0 to 100"));
                    }
                    let message = validate::optional_text("message", message)?;
                    if let Some((at, last)) = self.last_progress {
                        let soon = (now - at).num_milliseconds() < PROGRESS_INTERVAL_MS;
                        if soon && percent.abs_diff(last) < PROGRESS_JUMP && percent < 100 {
                            return Ok(vec![]);
                        }
                    }
                    TaskEvent::TaskProgressReported(TaskProgressReported {
                        agent_id,
                        percent,
                        message,
                        reported_at: Some(now),
                    })
                }
                _ => return refuse("report progress on"),
            },
            TaskCommand::CompleteTask { agent_id, output } => match status {
                Running => {
                    self.check_holder(agent_id)?;
                    TaskEvent::TaskSucceeded(TaskSucceeded {
                        agent_id,
                        attempt: self.attempt,
                        output,
                    })
                }
                _ => return refuse("complete"),
            },
            TaskCommand::FailTask {
                agent_id,
                error,
                retryable,
            } => {
                match (status, agent_id) {
                    (Assigned | Running, Some(agent)) => self.check_holder(agent)?,
                    (Submitted | Scheduled | Queued | Assigned | Running, None) => {}
                    _ => return refuse("fail"),
                }
                TaskEvent::TaskFailed(TaskFailed {
                    // The system fails an attempt on behalf of its holder.
                    agent_id: agent_id.or(self.agent_id),
                    attempt: self.attempt,
                    error: validate::text("error", &error, validate::MAX_TEXT)?,
                    retryable,
                })
            }
            TaskCommand::ScheduleRetry { not_before } => match status {
                Failed | TimedOut => {
                    if !self.retryable {
                        return Err(DomainError::NotRetryable);
                    }
                    let max_attempts = self.max_retries + 1;
                    if self.attempt >= max_attempts {
                        return Err(DomainError::RetriesExhausted {
                            attempt: self.attempt,
                            max_attempts,
                        });
                    }
                    TaskEvent::TaskRetryScheduled(TaskRetryScheduled {
                        attempt: self.attempt + 1,
                        not_before,
                    })
                }
                _ => return refuse("retry"),
            },
            TaskCommand::CancelTask { reason } => match status {
                Submitted | Scheduled | Queued | Assigned | Running => {
                    TaskEvent::TaskCancelled(TaskCancelled {
                        reason: validate::optional_text("reason", reason)?,
                        agent_id: self
                            .agent_id
                            .filter(|_| matches!(status, Assigned | Running)),
                    })
                }
                _ => return refuse("cancel"),
            },
            TaskCommand::TimeOutTask { phase } => {
                let expected = match phase {
                    TimeoutPhase::Queue => Queued,
                    TimeoutPhase::Lease => Assigned,
                    TimeoutPhase::Execution => Running,
                };
                if status != expected {
                    return refuse("time out");
                }
                TaskEvent::TaskTimedOut(TaskTimedOut {
                    phase,
                    attempt: self.attempt,
                    agent_id: self.agent_id.filter(|_| phase != TimeoutPhase::Queue),
                })
            }
        };
        Ok(vec![event])
    }

    fn check_holder(&self, caller: Uuid) -> Result<(), DomainError> {
        if self.agent_id == Some(caller) {
            Ok(())
        } else {
            Err(DomainError::NotTaskHolder {
                holder: self.agent_id,
                caller,
            })
        }
    }
}

fn submit(s: &SubmitTask) -> Result<Vec<TaskEvent>, DomainError> {
    if s.priority > validate::MAX_PRIORITY {
        return Err(DomainError::invalid("priority", "must be 0 to 9"));
    }
    if s.max_retries > validate::MAX_RETRIES {
        return Err(DomainError::invalid(
            "max_retries",
            format!("must be at most {}", validate::MAX_RETRIES),
        ));
    }
    if s.depends_on.len() > validate::MAX_DEPENDENCIES {
        return Err(DomainError::invalid(
            "depends_on",
            format!("at most {} entries", validate::MAX_DEPENDENCIES),
        ));
    }
    if s.depends_on.contains(&s.task_id) || s.parent_task_id == Some(s.task_id) {
        return Err(DomainError::invalid(
            "depends_on",
            "a task cannot depend on or be a child of itself",
        ));
    }
    let mut depends_on: Vec<Uuid> = Vec::with_capacity(s.depends_on.len());
    for id in &s.depends_on {
        if !depends_on.contains(id) {
            depends_on.push(*id);
        }
    }
    let idempotency_key = s
        .idempotency_key
        .as_deref()
        .map(|k| validate::text("idempotency_key", k, validate::MAX_IDEMPOTENCY_KEY))
        .transpose()?;
    let submitted = TaskEvent::TaskSubmitted(TaskSubmitted {
        task_type: validate::identifier("task_type", &s.task_type, validate::MAX_TYPE)?,
        input: s.input.clone(),
        required_capabilities: validate::labels("required_capabilities", &s.required_capabilities)?,
        priority: s.priority,
        target_agent_id: s.target_agent_id,
        schedule_at: s.schedule_at,
        queue_timeout_secs: validate::timeout("queue_timeout_secs", s.queue_timeout_secs)?,
        execution_timeout_secs: validate::timeout(
            "execution_timeout_secs",
            s.execution_timeout_secs,
        )?,
        max_retries: s.max_retries,
        idempotency_key,
        parent_task_id: s.parent_task_id,
        depends_on,
    });
    let next = match s.schedule_at {
        Some(at) if at > s.now => Some(TaskEvent::TaskScheduled(TaskScheduled { schedule_at: at })),
        // Waits in `submitted` until the coordinator sees its dependencies succeed.
        _ if !s.depends_on.is_empty() => None,
        _ => Some(TaskEvent::TaskQueued(TaskQueued { attempt: 1 })),
    };
    Ok(std::iter::once(submitted).chain(next).collect())
}
