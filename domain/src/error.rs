//! Why a command was refused.

use uuid::Uuid;

/// Every way a command can be refused by an aggregate. [`DomainError::code`] is
/// the stable kind that HTTP problems and callers branch on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// A command other than create/submit reached an aggregate with no events.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A create/submit reached an aggregate that already exists.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// An input field breaks a rule.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The command is not allowed in the aggregate's current state.
    #[error("cannot {action} {aggregate} that is {status}")]
    IllegalTransition {
        aggregate: &'static str,
        action: &'static str,
        status: String,
    },
    /// An agent reported on a task that another agent (or none) holds.
    #[error("task is held by {holder:?}, not by agent {caller}")]
    NotTaskHolder { holder: Option<Uuid>, caller: Uuid },
    /// The task names a target agent and another agent was chosen.
    #[error("task is reserved for agent {target}, not {offered}")]
    NotTargetAgent { target: Uuid, offered: Uuid },
    /// A retry was asked for a task with no retries left.
    #[error("no retries left: attempt {attempt} of at most {max_attempts}")]
    RetriesExhausted { attempt: u32, max_attempts: u32 },
    /// A retry was asked for a failure reported as not retryable.
    #[error("the last failure is not retryable")]
    NotRetryable,
}

impl DomainError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::AlreadyExists(_) => "already_exists",
            Self::Invalid { .. } => "validation_failed",
            Self::IllegalTransition { .. } => "illegal_transition",
            Self::NotTaskHolder { .. } => "not_task_holder",
            Self::NotTargetAgent { .. } => "not_target_agent",
            Self::RetriesExhausted { .. } => "retries_exhausted",
            Self::NotRetryable => "not_retryable",
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
