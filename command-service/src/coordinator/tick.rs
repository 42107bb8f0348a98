//! The coordinator's decisions, taken on every tick from its view and the clock.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{AgentCommand, TaskCommand};
use futures::StreamExt;
use schemas::agent::{Assignment, Cancellation};
use schemas::decode::DomainEvent;
use schemas::envelope::metadata_keys;
use schemas::events::TimeoutPhase;
use schemas::{subjects, EventEnvelope, EventMetadata};
use uuid::Uuid;

use super::view::{self, Notice};
use super::{Coordinator, Due};
use crate::error::ApiError;
use crate::store;

type Tick<T> = Result<T, sqlx::Error>;

/// Assignments issued at once in one dispatch pass.
const DISPATCH_CONCURRENCY: usize = 16;

impl Coordinator {
    /// One pass over every kind of deadline and decision. Errors are logged:
    /// the next tick tries again from the view.
    pub async fn tick(&self) {
        let steps = async {
            self.check_liveness().await?;
            self.fail_tasks_of_lost_agents().await?;
            self.time_out().await?;
            self.schedule_retries().await?;
            self.release_waiting().await?;
            self.dispatch().await
        };
        if let Err(e) = steps.await {
            tracing::warn!(error = %e, "coordinator: tick failed; retrying next tick");
        }
    }

    /// The part of [`Self::tick`] that events (not the clock) make due:
    /// retries of failures, tasks whose dependencies finished, dispatch —
    /// those of them that `due` names.
    pub async fn react(&self, due: Due) {
        let steps = async {
            if due.retries {
                self.schedule_retries().await?;
            }
            if due.waiting {
                self.release_waiting().await?;
            }
            if due.dispatch {
                self.dispatch().await?;
            }
            Ok::<(), sqlx::Error>(())
        };
        if let Err(e) = steps.await {
            tracing::warn!(error = %e, "coordinator: reacting to events failed; retrying next tick");
        }
    }

    fn metadata(&self, correlation_id: &str, now: DateTime<Utc>) -> HashMap<String, String> {
        let request_id = Uuid::new_v4().to_string();
        let mut map = EventMetadata {
            actor: "coordinator".into(),
            correlation_id: correlation_id.to_string(),
            causation_id: request_id.clone(),
            request_id,
        }
        .to_map();
        map.insert(metadata_keys::OCCURRED_AT.into(), now.to_rfc3339());
        map
    }

    /// Runs a command on a task at the version the view holds; on success
    /// writes its events through into the view and tells the agent. A
    /// conflict (the view was stale) or a refusal is not an error.
    async fn task_command(
        &self,
        task_id: Uuid,
        version: i64,
        correlation_id: &str,
        command: TaskCommand,
    ) -> Tick<bool> {
        let now = Utc::now();
        let result = store::execute(
            &self.stores.tasks,
            &task_id.to_string(),
            command,
            self.metadata(correlation_id, now),
            Some(version),
        )
        .await;
        let committed = match result {
            Ok(c) => c,
            Err(e) => {
                log_refusal("task", task_id, &e);
                return Ok(false);
            }
        };
        let events = committed
            .events
            .into_iter()
            .map(DomainEvent::Task)
            .collect();
        self.write_through(
            task_id,
            schemas::subjects::TASK,
            committed.version,
            correlation_id,
            now,
            events,
        )
        .await?;
        Ok(true)
    }

    async fn agent_command(
        &self,
        agent_id: Uuid,
        version: i64,
        command: AgentCommand,
    ) -> Tick<bool> {
        let now = Utc::now();
        let result = store::execute(
            &self.stores.agents,
            &agent_id.to_string(),
            command,
            self.metadata(&agent_id.to_string(), now),
            Some(version),
        )
        .await;
        let committed = match result {
            Ok(c) => c,
            Err(e) => {
                log_refusal("agent", agent_id, &e);
                return Ok(false);
            }
        };
        let events = committed
            .events
            .into_iter()
            .map(DomainEvent::Agent)
            .collect();
        self.write_through(
            agent_id,
            schemas::subjects::AGENT,
            committed.version,
            "",
            now,
            events,
        )
        .await?;
        Ok(true)
    }

    async fn write_through(
        &self,
        id: Uuid,
        aggregate_type: &str,
        version: i64,
        correlation_id: &str,
        now: DateTime<Utc>,
        events: Vec<DomainEvent>,
    ) -> Tick<()> {
        let first = version - events.len() as i64 + 1;
        let mut tx = self.pool.begin().await?;
        // Derived from events already durable; see `Coordinator::apply_batch`.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let mut notices = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let envelope = EventEnvelope {
                event_id: Uuid::nil(),
                aggregate_type: aggregate_type.to_string(),
                aggregate_id: id.to_string(),
                sequence: first + i as i64,
                event_type: String::new(),
                event_version: String::new(),
                occurred_at: now,
                metadata: EventMetadata {
                    correlation_id: correlation_id.to_string(),
                    ..Default::default()
                },
                payload: serde_json::Value::Null,
                hash: None,
            };
            if let Some(n) = view::apply(&mut tx, &envelope, event).await? {
                notices.push(n);
            }
        }
        tx.commit().await?;
        for n in notices {
            self.notify(n).await;
        }
        Ok(())
    }

    /// Tells an agent about an assignment or a cancellation (core NATS; an
    /// agent that missed it finds its assignments through the query API).
    pub(crate) async fn notify(&self, notice: Notice) {
        let (subject, body) = match notice {
            Notice::Assigned { agent_id, task_id } => {
                let row: Option<AssignedRow> =
                    sqlx::query_as(
                        "SELECT attempt, task_type, input, lease_expires_at, execution_timeout_secs \
                         FROM coord_tasks WHERE task_id = $1 AND status = 'assigned' AND agent_id = $2",
                    )
                    .bind(task_id)
                    .bind(agent_id)
                    .fetch_optional(&self.pool)
                    .await
                    .unwrap_or(None);
                let Some(AssignedRow {
                    attempt,
                    task_type,
                    input,
                    lease_expires_at: Some(lease),
                    execution_timeout_secs: exec,
                }) = row
                else {
                    return;
                };
                let a = Assignment {
                    task_id,
                    attempt: attempt.max(0) as u32,
                    task_type,
                    input,
                    lease_expires_at: lease,
                    execution_timeout_secs: exec.map(|s| s.max(0) as u64),
                    sent_at: Utc::now(),
                };
                (
                    subjects::agent_assigned(&agent_id.to_string()),
                    serde_json::to_vec(&a),
                )
            }
            Notice::Cancelled {
                agent_id,
                task_id,
                reason,
            } => (
                subjects::agent_cancelled(&agent_id.to_string()),
                serde_json::to_vec(&Cancellation { task_id, reason }),
            ),
        };
        match body {
            Ok(body) => {
                if let Err(e) = self.nats.publish(subject, body.into()).await {
                    tracing::warn!(error = %e, "coordinator: could not notify an agent");
                }
            }
            Err(e) => tracing::warn!(error = %e, "coordinator: could not encode a notice"),
        }
    }

    /// Active agents silent for longer than the window become unhealthy;
    /// unhealthy agents heard from since become active again.
    async fn check_liveness(&self) -> Tick<()> {
        let window = chrono::Duration::from_std(self.settings.heartbeat_window)
            .unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        let rows: Vec<LivenessRow> = sqlx::query_as(
            "SELECT a.agent_id, a.version, a.status, a.status_since, l.last_seen_at \
             FROM coord_agents a LEFT JOIN agent_liveness l USING (agent_id) \
             WHERE a.status IN ('active', 'unhealthy')",
        )
        .fetch_all(&self.pool)
        .await?;
        for LivenessRow {
            agent_id,
            version,
            status,
            status_since: since,
            last_seen_at: seen,
        } in rows
        {
            let last_sign = seen.max(since).unwrap_or(now);
            if status == "active" && now - last_sign > window {
                let reason = format!("no heartbeat for {} s", (now - last_sign).num_seconds());
                self.agent_command(
                    agent_id,
                    version,
                    AgentCommand::MarkAgentUnhealthy { reason },
                )
                .await?;
            } else if status == "unhealthy"
                && seen.is_some_and(|s| s > since.unwrap_or(s) && now - s <= window)
            {
                self.agent_command(agent_id, version, AgentCommand::MarkAgentRecovered)
                    .await?;
            }
        }
        Ok(())
    }

    /// Tasks held by an agent that became unhealthy or was retired fail (retryably).
    async fn fail_tasks_of_lost_agents(&self) -> Tick<()> {
        let rows: Vec<(Uuid, i64, String, Uuid, String)> = sqlx::query_as(
            "SELECT t.task_id, t.version, t.correlation_id, a.agent_id, a.status FROM coord_tasks t \
             JOIN coord_agents a ON a.agent_id = t.agent_id \
             WHERE t.status IN ('assigned', 'running') AND a.status IN ('unhealthy', 'retired')",
        )
        .fetch_all(&self.pool)
        .await?;
        for (task_id, version, corr, agent_id, status) in rows {
            let error = format!("agent {agent_id} became {status} while holding the task");
            self.task_command(
                task_id,
                version,
                &corr,
                TaskCommand::FailTask {
                    agent_id: None,
                    error,
                    retryable: true,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Lease, execution and queue-wait deadlines.
    async fn time_out(&self) -> Tick<()> {
        let rows: Vec<(Uuid, i64, String, String)> = sqlx::query_as(
            "SELECT task_id, version, correlation_id, status FROM coord_tasks WHERE \
                 (status = 'assigned' AND lease_expires_at < now()) \
              OR (status = 'running' AND execution_timeout_secs IS NOT NULL \
                  AND started_at + make_interval(secs => execution_timeout_secs) < now()) \
              OR (status = 'queued' AND queue_timeout_secs IS NOT NULL \
                  AND queued_at + make_interval(secs => queue_timeout_secs) < now())",
        )
        .fetch_all(&self.pool)
        .await?;
        for (task_id, version, corr, status) in rows {
            let phase = match status.as_str() {
                "assigned" => TimeoutPhase::Lease,
                "running" => TimeoutPhase::Execution,
                _ => TimeoutPhase::Queue,
            };
            self.task_command(task_id, version, &corr, TaskCommand::TimeOutTask { phase })
                .await?;
        }
        Ok(())
    }

    /// Failed (retryably) or timed-out attempts with retries left are retried
    /// after an exponential backoff with jitter.
    async fn schedule_retries(&self) -> Tick<()> {
        let rows: Vec<(Uuid, i64, String, i32)> = sqlx::query_as(
            "SELECT task_id, version, correlation_id, attempt FROM coord_tasks \
             WHERE status IN ('failed', 'timed_out') AND retryable AND attempt <= max_retries",
        )
        .fetch_all(&self.pool)
        .await?;
        for (task_id, version, corr, attempt) in rows {
            let delay = backoff(
                self.settings.retry_base,
                self.settings.retry_max,
                attempt.max(1) as u32,
                jitter(),
            );
            let not_before = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            self.task_command(
                task_id,
                version,
                &corr,
                TaskCommand::ScheduleRetry { not_before },
            )
            .await?;
        }
        Ok(())
    }

    /// Scheduled tasks whose time has come and tasks waiting on dependencies:
    /// queued when every dependency succeeded, failed when one cannot.
    async fn release_waiting(&self) -> Tick<()> {
        let rows: Vec<(Uuid, i64, String, Vec<Uuid>)> = sqlx::query_as(
            "SELECT task_id, version, correlation_id, depends_on FROM coord_tasks \
             WHERE (status = 'submitted' AND cardinality(depends_on) > 0) \
                OR (status = 'scheduled' AND due_at <= now())",
        )
        .fetch_all(&self.pool)
        .await?;
        for (task_id, version, corr, depends_on) in rows {
            let deps: Vec<(Uuid, String, bool, i32, i32)> = sqlx::query_as(
                "SELECT task_id, status, retryable, attempt, max_retries FROM coord_tasks WHERE task_id = ANY($1)",
            )
            .bind(&depends_on)
            .fetch_all(&self.pool)
            .await?;
            let failed = deps.iter().find(|(_, status, retryable, attempt, max)| {
                status == "cancelled"
                    || (matches!(status.as_str(), "failed" | "timed_out")
                        && !(*retryable && attempt <= max))
            });
            let command = if let Some((dep, status, ..)) = failed {
                TaskCommand::FailTask {
                    agent_id: None,
                    error: format!("dependency {dep} ended {status}"),
                    retryable: false,
                }
            } else if deps.len() == depends_on.len() && deps.iter().all(|d| d.1 == "succeeded") {
                TaskCommand::QueueTask
            } else {
                continue;
            };
            self.task_command(task_id, version, &corr, command).await?;
        }
        Ok(())
    }

    /// Queued tasks, highest priority first then oldest, each to a healthy
    /// active agent with every required capability and free capacity, least
    /// loaded first, avoiding the agent of the previous attempt where possible.
    async fn dispatch(&self) -> Tick<()> {
        // Agents first: with no free capacity anywhere there is nothing to
        // plan, however many tasks wait.
        let mut agents: Vec<(Uuid, Vec<String>, i32, i64)> = sqlx::query_as(
            "SELECT a.agent_id, a.capabilities, a.max_concurrent_tasks, \
                 (SELECT count(*) FROM coord_tasks t WHERE t.agent_id = a.agent_id \
                  AND t.status IN ('assigned', 'running')) \
             FROM coord_agents a WHERE a.status = 'active'",
        )
        .fetch_all(&self.pool)
        .await?;
        if !agents
            .iter()
            .any(|(_, _, max, load)| *load < i64::from(*max))
        {
            return Ok(());
        }
        let tasks: Vec<QueuedRow> = sqlx::query_as(
            "SELECT task_id, version, correlation_id, required_capabilities, target_agent_id, last_agent_id \
             FROM coord_tasks WHERE status = 'queued' ORDER BY priority DESC, queued_at, task_id LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await?;
        if tasks.is_empty() {
            return Ok(());
        }
        let lease = chrono::Duration::from_std(self.settings.lease)
            .unwrap_or(chrono::Duration::seconds(30));
        // Plan every assignment first (capacity is counted as planned), then
        // issue them concurrently: they touch different aggregates.
        let mut plan = Vec::new();
        for QueuedRow {
            task_id,
            version,
            correlation_id,
            required_capabilities: required,
            target_agent_id: target,
            last_agent_id: previous,
        } in tasks
        {
            let chosen = agents
                .iter_mut()
                .filter(|(id, caps, max, load)| {
                    *load < i64::from(*max)
                        && target.is_none_or(|t| t == *id)
                        && required.iter().all(|r| caps.contains(r))
                })
                .min_by_key(|(id, _, _, load)| (Some(*id) == previous, *load, *id));
            let Some(agent) = chosen else { continue };
            agent.3 += 1;
            plan.push((task_id, version, correlation_id, agent.0));
        }
        let results: Vec<Tick<bool>> = futures::stream::iter(plan)
            .map(|(task_id, version, corr, agent_id)| async move {
                let command = TaskCommand::AssignTask {
                    agent_id,
                    lease_expires_at: Utc::now() + lease,
                };
                self.task_command(task_id, version, &corr, command).await
            })
            .buffer_unordered(DISPATCH_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            r?;
        }
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct AssignedRow {
    attempt: i32,
    task_type: String,
    input: serde_json::Value,
    lease_expires_at: Option<DateTime<Utc>>,
    execution_timeout_secs: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct LivenessRow {
    agent_id: Uuid,
    version: i64,
    status: String,
    status_since: Option<DateTime<Utc>>,
    last_seen_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct QueuedRow {
    task_id: Uuid,
    version: i64,
    correlation_id: String,
    required_capabilities: Vec<String>,
    target_agent_id: Option<Uuid>,
    last_agent_id: Option<Uuid>,
}

fn log_refusal(kind: &str, id: Uuid, e: &ApiError) {
    match e {
        ApiError::Conflict { .. } | ApiError::NotFound(_) | ApiError::Unprocessable { .. } => {
            tracing::debug!(%id, error = %e, "coordinator: {kind} command not applied (view was stale)")
        }
        _ => tracing::warn!(%id, error = %e, "coordinator: {kind} command failed"),
    }
}

/// A number in [0, 1) from the OS's randomness (via a v4 UUID).
fn jitter() -> f64 {
    (Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0
}

/// Delay before attempt `failed_attempt + 1`: `base × 2^(failed_attempt-1)`,
/// capped at `max`, scaled by 0.8–1.2 with `jitter` in [0, 1).
pub fn backoff(base: Duration, max: Duration, failed_attempt: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << failed_attempt.saturating_sub(1).min(20));
    exp.min(max).mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_twenty_percent() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff(base, max, 1, 0.5), Duration::from_millis(100));
        assert_eq!(backoff(base, max, 2, 0.5), Duration::from_millis(200));
        assert_eq!(backoff(base, max, 3, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(base, max, 9, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(base, max, 1, 0.0), Duration::from_millis(80));
        assert_eq!(backoff(base, max, 1, 1.0), Duration::from_millis(120));
    }
}
