//! The coordinator: a process manager that follows the event stream and issues
//! commands so that no task is left stuck. One instance is active across all
//! command-service instances (an advisory lock); the others stand by.
//!
//! It folds the stream into its own tables ([`view`]) with a checkpoint, so a
//! restart or failover resumes where the view stopped and loses no timer: every
//! deadline (schedule, lease, execution, queue wait, retry backoff, liveness)
//! is a column compared with the clock on each [`tick`]. Every command it
//! issues is conditional on the version its view holds, so a stale view (or a
//! second coordinator) gets a conflict instead of dispatching twice; a command
//! that succeeds is written through into the view at once.
//!
//! Layout: [`view`] (the fold), [`tick`] (the decisions), this file (the loop).

pub mod tick;
pub mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use futures::StreamExt;
use schemas::decode::DomainEvent;
use schemas::events::TaskEvent;
use service_kit::leader;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::store::EventStores;

/// Lock key of the coordinator role.
pub const COORDINATOR_LOCK: i64 = 0x5355_5441_5a41_0002;

/// Coordinator settings (from [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    pub stream: String,
    /// How often deadlines are checked.
    pub tick: Duration,
    /// An active agent with no heartbeat for this long is marked unhealthy.
    pub heartbeat_window: Duration,
    /// Time an agent has to start an assigned task.
    pub lease: Duration,
    /// First retry delay; doubles per attempt up to `retry_max`, ±20 % jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub standby_poll: Duration,
}

/// Whether this instance leads, for health answers and tests.
#[derive(Debug, Default)]
pub struct CoordinatorStatus {
    pub leader: AtomicBool,
}

pub struct Coordinator {
    pub(crate) pool: PgPool,
    pub(crate) stores: Arc<EventStores>,
    pub(crate) nats: async_nats::Client,
    pub(crate) settings: CoordinatorSettings,
    pub(crate) status: Arc<CoordinatorStatus>,
}

impl Coordinator {
    pub fn new(
        pool: PgPool,
        stores: Arc<EventStores>,
        nats: async_nats::Client,
        settings: CoordinatorSettings,
        status: Arc<CoordinatorStatus>,
    ) -> Self {
        Self {
            pool,
            stores,
            nats,
            settings,
            status,
        }
    }

    /// Stands by until it holds the lock, then coordinates until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            match leader::try_lead(&self.pool, COORDINATOR_LOCK).await {
                Ok(Some(mut lock)) => {
                    tracing::info!("coordinator: leading");
                    self.status.leader.store(true, Ordering::Relaxed);
                    let result = self.lead(&mut lock, &mut shutdown).await;
                    self.status.leader.store(false, Ordering::Relaxed);
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "coordinator: stopped leading; standing by");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "coordinator: cannot reach Postgres"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.standby_poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn lead(
        &self,
        lock: &mut sqlx::PgConnection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), async_nats::Error> {
        let start = {
            let mut conn = self.pool.acquire().await?;
            view::checkpoint(&mut conn).await?
        };
        let js = async_nats::jetstream::new(self.nats.clone());
        let stream = js.get_stream(&self.settings.stream).await?;
        let deliver_policy = match start {
            0 => DeliverPolicy::All,
            n => DeliverPolicy::ByStartSequence {
                start_sequence: n + 1,
            },
        };
        let mut messages = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy,
                ..Default::default()
            })
            .await?
            .messages()
            .await?;
        let mut ticker = tokio::time::interval(self.settings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lock_check = leader::LockCheck::every(self.settings.tick);
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            // Events call for the decisions they can change at once (a
            // queued task or a freed agent: dispatch; a success: dependants;
            // a failure: its retry); deadlines are the ticker's. A full pass
            // after every small batch was six statements per batch.
            let after_events = tokio::select! {
                first = messages.next() => {
                    let Some(first) = first else { return Err("event stream ended".into()) };
                    let mut batch = vec![first?];
                    while batch.len() < 500 {
                        match futures::FutureExt::now_or_never(messages.next()) {
                            Some(Some(m)) => batch.push(m?),
                            _ => break,
                        }
                    }
                    Some(self.apply_batch(&batch).await?)
                }
                _ = ticker.tick() => None,
                _ = shutdown.changed() => return Ok(()),
            };
            if !lock_check.still_leading(lock).await {
                return Err("lost the coordinator lock's connection".into());
            }
            match after_events {
                Some(due) => self.react(due).await,
                None => self.tick().await,
            }
        }
    }

    /// Folds a batch of stream messages into the view, then tells agents;
    /// returns the decisions its events call for.
    async fn apply_batch(
        &self,
        batch: &[async_nats::jetstream::Message],
    ) -> Result<Due, async_nats::Error> {
        // The checkpoint's statement also lets this commit skip the WAL flush
        // (see `view::set_checkpoint`).
        let mut tx = self.pool.begin().await?;
        let mut last = 0;
        let mut events = Vec::with_capacity(batch.len());
        for m in batch {
            let seq = m.info()?.stream_sequence;
            last = seq;
            match schemas::decode::decode(&m.payload) {
                Ok(decoded) => events.push(decoded),
                // The projections park such messages; the coordinator has
                // nothing to decide from one.
                Err(e) => {
                    tracing::warn!(stream_sequence = seq, error = %e, "coordinator: skipping undecodable event")
                }
            }
        }
        let notices = apply_events(&mut tx, &events).await?;
        view::set_checkpoint(&mut tx, last).await?;
        tx.commit().await?;
        for n in notices {
            self.notify(n).await;
        }
        Ok(Due::of(events.iter().map(|(_, e)| e)))
    }
}

/// The decisions a batch of events can make due at once; the ticker makes
/// every one of them, and every deadline, due anyway. Under load most
/// batches are submissions and their queueings, which call for dispatch
/// only: two of the three lookups after each batch found nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    /// A failed or timed-out attempt may be retried.
    pub retries: bool,
    /// A dependency ended, a task with dependencies arrived, or a schedule was set.
    pub waiting: bool,
    /// A task was queued or an agent's capacity or status may have changed.
    pub dispatch: bool,
}

impl Due {
    pub fn of<'a>(events: impl IntoIterator<Item = &'a DomainEvent>) -> Self {
        let mut due = Self::default();
        for event in events {
            let DomainEvent::Task(event) = event else {
                // Agents' events change who can take work.
                due.dispatch = true;
                continue;
            };
            match event {
                TaskEvent::TaskSubmitted(t) => due.waiting |= !t.depends_on.is_empty(),
                TaskEvent::TaskQueued(_) => due.dispatch = true,
                TaskEvent::TaskAssigned(_)
                | TaskEvent::TaskStarted(_)
                | TaskEvent::TaskProgressReported(_) => {}
                TaskEvent::TaskScheduled(_) | TaskEvent::TaskRetryScheduled(_) => {
                    due.waiting = true
                }
                TaskEvent::TaskSucceeded(_) | TaskEvent::TaskCancelled(_) => {
                    due.waiting = true;
                    due.dispatch = true;
                }
                TaskEvent::TaskFailed(_) | TaskEvent::TaskTimedOut(_) => {
                    due = Self {
                        retries: true,
                        waiting: true,
                        dispatch: true,
                    }
                }
            }
        }
        due
    }
}

/// Applies decoded events in order. Runs of submissions (each with its
/// queueing) go in with one insert, runs of other tasks' queueings with one
/// update; the rest one by one.
///
/// A submission's queueing is its aggregate's next event, but not always the
/// stream's next one: a group commit writes several commands' events
/// together, and in the stream one task's `TaskQueued` may follow other
/// tasks' submissions. It is folded into the insert wherever it stands in the
/// batch (nothing of that task comes between them, and the other tasks' rows
/// do not depend on it), and skipped when its turn comes.
pub async fn apply_events(
    conn: &mut sqlx::PgConnection,
    events: &[(schemas::EventEnvelope, DomainEvent)],
) -> sqlx::Result<Vec<view::Notice>> {
    let next = next_of_same_aggregate(events);
    let mut folded = vec![false; events.len()];
    let mut notices = Vec::new();
    let mut submitted: Vec<view::Submitted<'_>> = Vec::new();
    // Queueings whose submission came in an earlier batch (of distinct tasks).
    let mut queued: Vec<(&schemas::EventEnvelope, u32)> = Vec::new();
    for (i, (envelope, event)) in events.iter().enumerate() {
        if folded[i] {
            continue;
        }
        if let DomainEvent::Task(TaskEvent::TaskQueued(q)) = event {
            if queued
                .iter()
                .any(|(e, _)| e.aggregate_id == envelope.aggregate_id)
            {
                view::apply_queued(conn, &queued).await?;
                queued.clear();
            }
            queued.push((envelope, q.attempt));
            continue;
        }
        if let DomainEvent::Task(TaskEvent::TaskSubmitted(task)) = event {
            let queued = next[i].filter(|&j| {
                let (later, e) = &events[j];
                later.sequence == envelope.sequence + 1
                    && matches!(e, DomainEvent::Task(TaskEvent::TaskQueued(_)))
            });
            if let Some(j) = queued {
                folded[j] = true;
            }
            submitted.push(view::Submitted {
                envelope,
                task,
                queued: queued.map(|j| (&events[j].0, &events[j].1)),
            });
            continue;
        }
        flush_submitted(conn, &mut submitted).await?;
        view::apply_queued(conn, &queued).await?;
        queued.clear();
        if let Some(n) = view::apply(conn, envelope, event).await? {
            notices.push(n);
        }
    }
    flush_submitted(conn, &mut submitted).await?;
    view::apply_queued(conn, &queued).await?;
    Ok(notices)
}

/// For each event, the index of its aggregate's next event in the batch.
fn next_of_same_aggregate(events: &[(schemas::EventEnvelope, DomainEvent)]) -> Vec<Option<usize>> {
    let mut next = vec![None; events.len()];
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, (envelope, _)) in events.iter().enumerate().rev() {
        let key = (
            envelope.aggregate_type.as_str(),
            envelope.aggregate_id.as_str(),
        );
        next[i] = seen.insert(key, i);
    }
    next
}

async fn flush_submitted(
    conn: &mut sqlx::PgConnection,
    submitted: &mut Vec<view::Submitted<'_>>,
) -> sqlx::Result<()> {
    for (envelope, event) in view::insert_submitted(conn, submitted).await? {
        // A submission, and so its queueing, never notifies anyone.
        view::apply(conn, envelope, event).await?;
    }
    submitted.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::events::{TaskFailed, TaskQueued, TaskSubmitted};
    use uuid::Uuid;

    fn submitted(depends_on: Vec<Uuid>) -> DomainEvent {
        DomainEvent::Task(TaskEvent::TaskSubmitted(TaskSubmitted {
            task_type: "echo".into(),
            input: serde_json::json!({}),
            required_capabilities: vec![],
            priority: 0,
            target_agent_id: None,
            schedule_at: None,
            queue_timeout_secs: None,
            execution_timeout_secs: None,
            max_retries: 0,
            idempotency_key: None,
            parent_task_id: None,
            depends_on,
        }))
    }

    #[test]
    fn submissions_and_queueings_call_for_dispatch_only() {
        let queued = DomainEvent::Task(TaskEvent::TaskQueued(TaskQueued { attempt: 1 }));
        let due = Due::of([&submitted(vec![]), &queued, &submitted(vec![]), &queued]);
        assert_eq!(
            due,
            Due {
                retries: false,
                waiting: false,
                dispatch: true
            }
        );
        assert_eq!(Due::of([&submitted(vec![])]), Due::default());
    }

    #[test]
    fn dependencies_and_failures_call_for_their_lookups() {
        let with_deps = Due::of([&submitted(vec![Uuid::new_v4()])]);
        assert!(with_deps.waiting && !with_deps.retries);
        let failed = DomainEvent::Task(TaskEvent::TaskFailed(TaskFailed {
            agent_id: None,
            attempt: 1,
            error: "boom".into(),
            retryable: true,
        }));
        let due = Due::of([&submitted(vec![]), &failed]);
        assert_eq!(
            due,
            Due {
                retries: true,
                waiting: true,
                dispatch: true
            }
        );
    }
}
