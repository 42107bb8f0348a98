//! Given / when / then for every task command: its success and each refusal.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use schemas::events::*;
use serde_json::json;
use uuid::Uuid;

use super::{SubmitTask, Task, TaskCommand};
use crate::DomainError;

type TaskTest = TestFramework<Task>;

const TASK_ID: Uuid = Uuid::from_u128(1);
const AGENT: Uuid = Uuid::from_u128(100);
const OTHER: Uuid = Uuid::from_u128(200);

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn submit_cmd() -> SubmitTask {
    SubmitTask {
        task_id: TASK_ID,
        task_type: "echo".into(),
        input: json!({"text": "hi"}),
        required_capabilities: vec!["Echo".into()],
        priority: 5,
        target_agent_id: None,
        schedule_at: None,
        queue_timeout_secs: None,
        execution_timeout_secs: Some(60),
        max_retries: 1,
        idempotency_key: None,
        parent_task_id: None,
        depends_on: vec![],
        now: now(),
    }
}

fn submitted_with(f: impl FnOnce(&mut TaskSubmitted)) -> TaskEvent {
    let mut e = TaskSubmitted {
        task_type: "echo".into(),
        input: json!({"text": "hi"}),
        required_capabilities: vec!["echo".into()],
        priority: 5,
        target_agent_id: None,
        schedule_at: None,
        queue_timeout_secs: None,
        execution_timeout_secs: Some(60),
        max_retries: 1,
        idempotency_key: None,
        parent_task_id: None,
        depends_on: vec![],
    };
    f(&mut e);
    TaskEvent::TaskSubmitted(e)
}

fn submitted() -> TaskEvent {
    submitted_with(|_| {})
}
fn queued(attempt: u32) -> TaskEvent {
    TaskEvent::TaskQueued(TaskQueued { attempt })
}
fn assigned(attempt: u32) -> TaskEvent {
    TaskEvent::TaskAssigned(TaskAssigned {
        agent_id: AGENT,
        attempt,
        lease_expires_at: now() + Duration::seconds(30),
    })
}
fn started(attempt: u32) -> TaskEvent {
    TaskEvent::TaskStarted(TaskStarted {
        agent_id: AGENT,
        attempt,
    })
}
fn failed(attempt: u32, retryable: bool) -> TaskEvent {
    TaskEvent::TaskFailed(TaskFailed {
        agent_id: Some(AGENT),
        attempt,
        error: "boom".into(),
        retryable,
    })
}
fn cancelled() -> TaskEvent {
    TaskEvent::TaskCancelled(TaskCancelled {
        reason: None,
        agent_id: None,
    })
}

fn queued_task() -> Vec<TaskEvent> {
    vec![submitted(), queued(1)]
}
fn assigned_task() -> Vec<TaskEvent> {
    vec![submitted(), queued(1), assigned(1)]
}
fn running_task() -> Vec<TaskEvent> {
    vec![submitted(), queued(1), assigned(1), started(1)]
}

fn illegal(action: &'static str, status: &str) -> DomainError {
    DomainError::IllegalTransition {
        aggregate: "a task",
        action,
        status: status.into(),
    }
}

fn refused_field(given: Vec<TaskEvent>, cmd: TaskCommand) -> &'static str {
    match TaskTest::with(())
        .given(given)
        .when(cmd)
        .inspect_result()
        .unwrap_err()
    {
        DomainError::Invalid { field, .. } => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

// --- SubmitTask ---

#[test]
fn submit_without_schedule_or_dependencies_queues_at_once() {
    TaskTest::with(())
        .given_no_previous_events()
        .when(TaskCommand::SubmitTask(submit_cmd()))
        .then_expect_events(vec![submitted(), queued(1)]);
}

#[test]
fn submit_with_future_schedule_is_scheduled() {
    let at = now() + Duration::minutes(5);
    TaskTest::with(())
        .given_no_previous_events()
        .when(TaskCommand::SubmitTask(SubmitTask {
            schedule_at: Some(at),
            ..submit_cmd()
        }))
        .then_expect_events(vec![
            submitted_with(|e| e.schedule_at = Some(at)),
            TaskEvent::TaskScheduled(TaskScheduled { schedule_at: at }),
        ]);
}

#[test]
fn submit_with_past_schedule_queues_at_once() {
    let at = now() - Duration::minutes(5);
    TaskTest::with(())
        .given_no_previous_events()
        .when(TaskCommand::SubmitTask(SubmitTask {
            schedule_at: Some(at),
            ..submit_cmd()
        }))
        .then_expect_events(vec![
            submitted_with(|e| e.schedule_at = Some(at)),
            queued(1),
        ]);
}

#[test]
fn submit_with_dependencies_waits_submitted_and_deduplicates_them() {
    let dep = Uuid::from_u128(7);
    TaskTest::with(())
        .given_no_previous_events()
        .when(TaskCommand::SubmitTask(SubmitTask {
            depends_on: vec![dep, dep],
            ..submit_cmd()
        }))
        .then_expect_events(vec![submitted_with(|e| e.depends_on = vec![dep])]);
}

#[test]
fn submit_twice_is_refused() {
    TaskTest::with(())
        .given(queued_task())
        .when(TaskCommand::SubmitTask(submit_cmd()))
        .then_expect_error(DomainError::AlreadyExists("task"));
}

#[test]
fn submit_refuses_bad_input() {
    let cases: Vec<(SubmitTask, &str)> = vec![
        (
            SubmitTask {
                task_type: "".into(),
                ..submit_cmd()
            },
            "task_type",
        ),
        (
            SubmitTask {
                task_type: "no spaces".into(),
                ..submit_cmd()
            },
            "task_type",
        ),
        (
            SubmitTask {
                priority: 10,
                ..submit_cmd()
            },
            "priority",
        ),
        (
            SubmitTask {
                max_retries: 101,
                ..submit_cmd()
            },
            "max_retries",
        ),
        (
            SubmitTask {
                queue_timeout_secs: Some(0),
                ..submit_cmd()
            },
            "queue_timeout_secs",
        ),
        (
            SubmitTask {
                execution_timeout_secs: Some(10_000_000),
                ..submit_cmd()
            },
            "execution_timeout_secs",
        ),
        (
            SubmitTask {
                required_capabilities: vec!["a b".into()],
                ..submit_cmd()
            },
            "required_capabilities",
        ),
        (
            SubmitTask {
                depends_on: vec![TASK_ID],
                ..submit_cmd()
            },
            "depends_on",
        ),
        (
            SubmitTask {
                depends_on: (0..101).map(Uuid::from_u128).collect(),
                ..submit_cmd()
            },
            "depends_on",
        ),
        (
            SubmitTask {
                idempotency_key: Some(" ".into()),
                ..submit_cmd()
            },
            "idempotency_key",
        ),
    ];
    for (cmd, field) in cases {
        assert_eq!(
            refused_field(vec![], TaskCommand::SubmitTask(cmd)),
            field,
            "field {field}"
        );
    }
}

#[test]
fn commands_on_a_missing_task_are_not_found() {
    TaskTest::with(())
        .given_no_previous_events()
        .when(TaskCommand::CancelTask { reason: None })
        .then_expect_error(DomainError::NotFound("task"));
}

// --- QueueTask ---

#[test]
fn queue_from_submitted_or_scheduled() {
    TaskTest::with(())
        .given(vec![submitted_with(|e| {
            e.depends_on = vec![Uuid::from_u128(7)]
        })])
        .when(TaskCommand::QueueTask)
        .then_expect_events(vec![queued(1)]);
    TaskTest::with(())
        .given(vec![
            submitted(),
            TaskEvent::TaskScheduled(TaskScheduled { schedule_at: now() }),
        ])
        .when(TaskCommand::QueueTask)
        .then_expect_events(vec![queued(1)]);
}

#[test]
fn queue_refused_when_already_queued() {
    TaskTest::with(())
        .given(queued_task())
        .when(TaskCommand::QueueTask)
        .then_expect_error(illegal("queue", "queued"));
}

// --- AssignTask ---

#[test]
fn assign_a_queued_task() {
    TaskTest::with(())
        .given(queued_task())
        .when(TaskCommand::AssignTask {
            agent_id: AGENT,
            lease_expires_at: now() + Duration::seconds(30),
        })
        .then_expect_events(vec![assigned(1)]);
}

#[test]
fn assign_refused_unless_queued_or_to_another_than_the_target() {
    TaskTest::with(())
        .given(assigned_task())
        .when(TaskCommand::AssignTask {
            agent_id: AGENT,
            lease_expires_at: now(),
        })
        .then_expect_error(illegal("assign", "assigned"));
    TaskTest::with(())
        .given(vec![
            submitted_with(|e| e.target_agent_id = Some(OTHER)),
            queued(1),
        ])
        .when(TaskCommand::AssignTask {
            agent_id: AGENT,
            lease_expires_at: now(),
        })
        .then_expect_error(DomainError::NotTargetAgent {
            target: OTHER,
            offered: AGENT,
        });
}

// --- StartTask ---

#[test]
fn start_by_the_holder() {
    TaskTest::with(())
        .given(assigned_task())
        .when(TaskCommand::StartTask { agent_id: AGENT })
        .then_expect_events(vec![started(1)]);
}

#[test]
fn start_refused_for_another_agent_or_when_not_assigned() {
    TaskTest::with(())
        .given(assigned_task())
        .when(TaskCommand::StartTask { agent_id: OTHER })
        .then_expect_error(DomainError::NotTaskHolder {
            holder: Some(AGENT),
            caller: OTHER,
        });
    TaskTest::with(())
        .given(queued_task())
        .when(TaskCommand::StartTask { agent_id: AGENT })
        .then_expect_error(illegal("start", "queued"));
}

// --- ReportProgress ---

#[test]
fn progress_while_running() {
    TaskTest::with(())
        .given(running_task())
        .when(TaskCommand::ReportProgress {
            agent_id: AGENT,
            percent: 40,
            message: Some("halfway-ish".into()),
            now: now(),
        })
        .then_expect_events(vec![progress(40, now())]);
}

fn progress(percent: u8, at: DateTime<Utc>) -> TaskEvent {
    TaskEvent::TaskProgressReported(TaskProgressReported {
        agent_id: AGENT,
        percent,
        message: if percent == 40 {
            Some("halfway-ish".into())
        } else {
            None
        },
        reported_at: Some(at),
    })
}

#[test]
fn progress_is_coalesced_unless_a_second_passed_or_it_jumped() {
    let mut given = running_task();
    given.push(progress(40, now()));
    let report = |percent, at| TaskCommand::ReportProgress {
        agent_id: AGENT,
        percent,
        message: None,
        now: at,
    };
    let soon = now() + Duration::milliseconds(300);
    TaskTest::with(())
        .given(given.clone())
        .when(report(45, soon))
        .then_expect_events(vec![]);
    TaskTest::with(())
        .given(given.clone())
        .when(report(50, soon))
        .then_expect_events(vec![progress(50, soon)]);
    TaskTest::with(())
        .given(given.clone())
        .when(report(100, soon))
        .then_expect_events(vec![progress(100, soon)]);
    let later = now() + Duration::milliseconds(1000);
    TaskTest::with(())
        .given(given)
        .when(report(41, later))
        .then_expect_events(vec![progress(41, later)]);
}

#[test]
fn progress_refusals() {
    let cmd = |agent_id, percent| TaskCommand::ReportProgress {
        agent_id,
        percent,
        message: None,
        now: now(),
    };
    assert_eq!(refused_field(running_task(), cmd(AGENT, 101)), "percent");
    TaskTest::with(())
        .given(running_task())
        .when(cmd(OTHER, 10))
        .then_expect_error(DomainError::NotTaskHolder {
            holder: Some(AGENT),
            caller: OTHER,
        });
    TaskTest::with(())
        .given(assigned_task())
        .when(cmd(AGENT, 10))
        .then_expect_error(illegal("report progress on", "assigned"));
}

// --- CompleteTask ---

#[test]
fn complete_while_running() {
    TaskTest::with(())
        .given(running_task())
        .when(TaskCommand::CompleteTask {
            agent_id: AGENT,
            output: json!({"ok": true}),
        })
        .then_expect_events(vec![TaskEvent::TaskSucceeded(TaskSucceeded {
            agent_id: AGENT,
            attempt: 1,
            output: json!({"ok": true}),
        })]);
}

#[test]
fn complete_refusals() {
    let mut events = running_task();
    events.push(cancelled());
    TaskTest::with(())
        .given(events)
        .when(TaskCommand::CompleteTask {
            agent_id: AGENT,
            output: json!(null),
        })
        .then_expect_error(illegal("complete", "cancelled"));
    TaskTest::with(())
        .given(running_task())
        .when(TaskCommand::CompleteTask {
            agent_id: OTHER,
            output: json!(null),
        })
        .then_expect_error(DomainError::NotTaskHolder {
            holder: Some(AGENT),
            caller: OTHER,
        });
}

// --- FailTask ---

#[test]
fn fail_by_the_holder_or_by_the_system() {
    TaskTest::with(())
        .given(running_task())
        .when(TaskCommand::FailTask {
            agent_id: Some(AGENT),
            error: "boom".into(),
            retryable: true,
        })
        .then_expect_events(vec![failed(1, true)]);
    TaskTest::with(())
        .given(vec![submitted_with(|e| e.depends_on = vec![OTHER])])
        .when(TaskCommand::FailTask {
            agent_id: None,
            error: "dependency failed".into(),
            retryable: false,
        })
        .then_expect_events(vec![TaskEvent::TaskFailed(TaskFailed {
            agent_id: None,
            attempt: 1,
            error: "dependency failed".into(),
            retryable: false,
        })]);
}

#[test]
fn fail_refusals() {
    TaskTest::with(())
        .given(queued_task())
        .when(TaskCommand::FailTask {
            agent_id: Some(AGENT),
            error: "x".into(),
            retryable: true,
        })
        .then_expect_error(illegal("fail", "queued"));
    TaskTest::with(())
        .given(running_task())
        .when(TaskCommand::FailTask {
            agent_id: Some(OTHER),
            error: "x".into(),
            retryable: true,
        })
        .then_expect_error(DomainError::NotTaskHolder {
            holder: Some(AGENT),
            caller: OTHER,
        });
    let mut done = running_task();
    done.push(failed(1, false));
    TaskTest::with(())
        .given(done)
        .when(TaskCommand::FailTask {
            agent_id: None,
            error: "x".into(),
            retryable: true,
        })
        .then_expect_error(illegal("fail", "failed"));
    let field = refused_field(
        running_task(),
        TaskCommand::FailTask {
            agent_id: Some(AGENT),
            error: "".into(),
            retryable: true,
        },
    );
    assert_eq!(field, "error");
}

// --- ScheduleRetry ---

#[test]
fn retry_after_a_retryable_failure_then_queue_the_next_attempt() {
    let mut events = running_task();
    events.push(failed(1, true));
    let not_before = now() + Duration::seconds(2);
    TaskTest::with(())
        .given(events.clone())
        .when(TaskCommand::ScheduleRetry { not_before })
        .then_expect_events(vec![TaskEvent::TaskRetryScheduled(TaskRetryScheduled {
            attempt: 2,
            not_before,
        })]);
    events.push(TaskEvent::TaskRetryScheduled(TaskRetryScheduled {
        attempt: 2,
        not_before,
    }));
    TaskTest::with(())
        .given(events)
        .when(TaskCommand::QueueTask)
        .then_expect_events(vec![queued(2)]);
}

#[test]
fn retry_after_a_lease_timeout() {
    let mut events = assigned_task();
    events.push(TaskEvent::TaskTimedOut(TaskTimedOut {
        phase: TimeoutPhase::Lease,
        attempt: 1,
        agent_id: Some(AGENT),
    }));
    let not_before = now();
    TaskTest::with(())
        .given(events)
        .when(TaskCommand::ScheduleRetry { not_before })
        .then_expect_events(vec![TaskEvent::TaskRetryScheduled(TaskRetryScheduled {
            attempt: 2,
            not_before,
        })]);
}

#[test]
fn retry_refusals() {
    let not_before = now();
    // Not retryable.
    let mut events = running_task();
    events.push(failed(1, false));
    TaskTest::with(())
        .given(events)
        .when(TaskCommand::ScheduleRetry { not_before })
        .then_expect_error(DomainError::NotRetryable);
    // Queue timeouts are not retried.
    let mut events = queued_task();
    events.push(TaskEvent::TaskTimedOut(TaskTimedOut {
        phase: TimeoutPhase::Queue,
        attempt: 1,
        agent_id: None,
    }));
    TaskTest::with(())
        .given(events)
        .when(TaskCommand::ScheduleRetry { not_before })
        .then_expect_error(DomainError::NotRetryable);
    // Exhausted: max_retries = 1 allows two attempts.
    let mut events = running_task();
    events.extend([
        failed(1, true),
        TaskEvent::TaskRetryScheduled(TaskRetryScheduled {
            attempt: 2,
            not_before,
        }),
        queued(2),
        assigned(2),
        started(2),
        failed(2, true),
    ]);
    TaskTest::with(())
        .given(events)
        .when(TaskCommand::ScheduleRetry { not_before })
        .then_expect_error(DomainError::RetriesExhausted {
            attempt: 2,
            max_attempts: 2,
        });
    // Not failed at all.
    TaskTest::with(())
        .given(running_task())
        .when(TaskCommand::ScheduleRetry { not_before })
        .then_expect_error(illegal("retry", "running"));
}

// --- CancelTask ---

#[test]
fn cancel_a_running_task_names_its_agent() {
    TaskTest::with(())
        .given(running_task())
        .when(TaskCommand::CancelTask {
            reason: Some("no longer needed".into()),
        })
        .then_expect_events(vec![TaskEvent::TaskCancelled(TaskCancelled {
            reason: Some("no longer needed".into()),
            agent_id: Some(AGENT),
        })]);
}

#[test]
fn cancel_a_queued_task() {
    TaskTest::with(())
        .given(queued_task())
        .when(TaskCommand::CancelTask { reason: None })
        .then_expect_events(vec![cancelled()]);
}

#[test]
fn cancel_refused_once_finished() {
    let mut events = running_task();
    events.push(TaskEvent::TaskSucceeded(TaskSucceeded {
        agent_id: AGENT,
        attempt: 1,
        output: json!(null),
    }));
    TaskTest::with(())
        .given(events)
        .when(TaskCommand::CancelTask { reason: None })
        .then_expect_error(illegal("cancel", "succeeded"));
    let mut events = queued_task();
    events.push(cancelled());
    TaskTest::with(())
        .given(events)
        .when(TaskCommand::CancelTask { reason: None })
        .then_expect_error(illegal("cancel", "cancelled"));
}

// --- TimeOutTask ---

#[test]
fn time_out_in_each_phase() {
    let cases = [
        (queued_task(), TimeoutPhase::Queue, None),
        (assigned_task(), TimeoutPhase::Lease, Some(AGENT)),
        (running_task(), TimeoutPhase::Execution, Some(AGENT)),
    ];
    for (given, phase, agent_id) in cases {
        TaskTest::with(())
            .given(given)
            .when(TaskCommand::TimeOutTask { phase })
            .then_expect_events(vec![TaskEvent::TaskTimedOut(TaskTimedOut {
                phase,
                attempt: 1,
                agent_id,
            })]);
    }
}

#[test]
fn time_out_refused_in_the_wrong_phase() {
    TaskTest::with(())
        .given(running_task())
        .when(TaskCommand::TimeOutTask {
            phase: TimeoutPhase::Lease,
        })
        .then_expect_error(illegal("time out", "running"));
}
