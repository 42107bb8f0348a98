//! The SutazAI agent SDK: what an agent author needs to take part.
//!
//! [`start`] registers a new agent (or attaches to an existing id), activates
//! it, heartbeats in the background, receives assignments over NATS
//! (`sutazai.agents.<id>.tasks.assigned`), and also polls the query API for
//! its assignments, so a missed notification never strands a task. Each
//! assignment is started, handed to your [`Executor`], and reported complete
//! or failed; a cancellation stops the executor's future.
//!
//! Layout: [`client`] (the HTTP calls), this file (the agent loop). The
//! `reference-agent` binary is built on it.
#![forbid(unsafe_code)]

pub mod client;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use schemas::agent::{Assignment, Cancellation};
use schemas::subjects;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use uuid::Uuid;

pub use client::{Client, SdkError};

/// How to reach SutazAI and who this agent is.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub command_url: String,
    pub query_url: String,
    pub nats_url: String,
    /// Attach to this agent; a new one is registered when `None`.
    pub agent_id: Option<Uuid>,
    pub name: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub max_concurrent_tasks: u32,
    pub config: Value,
    pub heartbeat_every: Duration,
    /// How often to ask the query API for assignments (the safety net).
    pub poll_every: Duration,
    /// The command service's API token, when it requires one.
    pub api_token: Option<String>,
}

/// Why a task failed, and whether another attempt could succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    pub message: String,
    pub retryable: bool,
}

impl TaskError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// What a running task can do besides returning.
#[derive(Clone)]
pub struct TaskContext {
    client: Client,
    pub agent_id: Uuid,
    pub task_id: Uuid,
}

impl TaskContext {
    /// Reports progress (0–100). Best effort: a failure is logged, not raised.
    pub async fn progress(&self, percent: u8, message: Option<&str>) {
        if let Err(e) = self
            .client
            .report_progress(self.task_id, self.agent_id, percent, message)
            .await
        {
            tracing::debug!(task_id = %self.task_id, error = %e, "progress not recorded");
        }
    }
}

/// Runs tasks. The SDK drops the future when the task is cancelled.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn execute(&self, task: &Assignment, ctx: &TaskContext) -> Result<Value, TaskError>;
}

/// What happened to the tasks this agent received (for tests and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed(Uuid),
    Failed(Uuid),
    Cancelled(Uuid),
}

/// A running agent.
pub struct AgentHandle {
    pub agent_id: Uuid,
    pub outcomes: Arc<Mutex<Vec<Outcome>>>,
    tasks: JoinSet<()>,
    executions: Executions,
}

impl AgentHandle {
    /// Stops heartbeating and taking work; tasks in flight are abandoned (the
    /// coordinator retries them once the lease or liveness window passes).
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        if let Ok(mut running) = self.executions.lock() {
            running.drain(..).for_each(|h| h.abort());
        }
        while self.tasks.join_next().await.is_some() {}
    }

    /// Dies at once, as a crashed process would.
    pub async fn kill(self) {
        self.stop().await
    }

    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

type Running = Arc<Mutex<HashMap<Uuid, (u32, Option<oneshot::Sender<()>>)>>>;
type Executions = Arc<Mutex<Vec<tokio::task::AbortHandle>>>;

/// Registers or attaches, activates, and starts the agent's loops.
pub async fn start(
    options: AgentOptions,
    executor: Arc<dyn Executor>,
) -> Result<AgentHandle, SdkError> {
    let client = Client::new(
        &options.command_url,
        &options.query_url,
        options.api_token.as_deref(),
    );
    let agent_id = match options.agent_id {
        Some(id) => id,
        None => client.register(&options).await?,
    };
    client.activate(agent_id).await?;
    client.heartbeat(agent_id, 0).await?;
    let nats = async_nats::ConnectOptions::new()
        .name(format!("sutazai-agent-{agent_id}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(options.nats_url.as_str())
        .await
        .map_err(|e| SdkError::Nats(e.to_string()))?;
    let mut inbox = nats
        .subscribe(subjects::agent_inbox(&agent_id.to_string()))
        .await
        .map_err(|e| SdkError::Nats(e.to_string()))?;
    let running: Running = Arc::default();
    let load = Arc::new(AtomicU32::new(0));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let executions: Executions = Arc::default();
    let runner = Runner {
        executions: executions.clone(),
        client: client.clone(),
        agent_id,
        executor,
        running: running.clone(),
        load: load.clone(),
        outcomes: outcomes.clone(),
    };
    let mut tasks = JoinSet::new();

    // Heartbeats.
    let (hb_client, hb_load, every) = (client.clone(), load.clone(), options.heartbeat_every);
    tasks.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = hb_client
                .heartbeat(agent_id, hb_load.load(Ordering::Relaxed))
                .await
            {
                tracing::warn!(%agent_id, error = %e, "heartbeat failed");
            }
        }
    });

    // Notifications.
    let (inbox_runner, inbox_running) = (runner.clone(), running.clone());
    tasks.spawn(async move {
        while let Some(msg) = inbox.next().await {
            if msg.subject.ends_with(".tasks.assigned") {
                match serde_json::from_slice::<Assignment>(&msg.payload) {
                    Ok(a) => inbox_runner.take(a),
                    Err(e) => tracing::warn!(error = %e, "malformed assignment ignored"),
                }
            } else if msg.subject.ends_with(".tasks.cancelled") {
                match serde_json::from_slice::<Cancellation>(&msg.payload) {
                    Ok(c) => cancel(&inbox_running, c.task_id),
                    Err(e) => tracing::warn!(error = %e, "malformed cancellation ignored"),
                }
            }
        }
    });

    // The safety net: assignments this agent holds but may not have heard of.
    let (poll_runner, poll_every) = (runner.clone(), options.poll_every);
    tasks.spawn(async move {
        loop {
            match poll_runner.client.assignments(agent_id).await {
                Ok(list) => list.into_iter().for_each(|a| poll_runner.take(a)),
                Err(e) => tracing::debug!(%agent_id, error = %e, "assignment poll failed"),
            }
            tokio::time::sleep(poll_every).await;
        }
    });
    Ok(AgentHandle {
        agent_id,
        outcomes,
        tasks,
        executions,
    })
}

fn cancel(running: &Running, task_id: Uuid) {
    if let Ok(mut map) = running.lock() {
        if let Some((_, tx)) = map.get_mut(&task_id) {
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
        }
    }
}

#[derive(Clone)]
struct Runner {
    executions: Executions,
    client: Client,
    agent_id: Uuid,
    executor: Arc<dyn Executor>,
    running: Running,
    load: Arc<AtomicU32>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
}

impl Runner {
    /// Starts an assignment unless this agent already runs that attempt.
    fn take(&self, a: Assignment) {
        let (cancel_tx, cancel_rx) = oneshot::channel();
        {
            let Ok(mut map) = self.running.lock() else {
                return;
            };
            if map
                .get(&a.task_id)
                .is_some_and(|(attempt, _)| *attempt >= a.attempt)
            {
                return;
            }
            map.insert(a.task_id, (a.attempt, Some(cancel_tx)));
        }
        let this = self.clone();
        let handle = tokio::spawn(async move {
            this.load.fetch_add(1, Ordering::Relaxed);
            this.run(a, cancel_rx).await;
            this.load.fetch_sub(1, Ordering::Relaxed);
        });
        if let Ok(mut e) = self.executions.lock() {
            e.retain(|h| !h.is_finished());
            e.push(handle.abort_handle());
        }
    }

    async fn run(&self, a: Assignment, cancel_rx: oneshot::Receiver<()>) {
        let task_id = a.task_id;
        if let Err(e) = self.client.start(task_id, self.agent_id).await {
            tracing::info!(%task_id, error = %e, "could not start the task; leaving it");
            return;
        }
        let ctx = TaskContext {
            client: self.client.clone(),
            agent_id: self.agent_id,
            task_id,
        };
        let outcome = tokio::select! {
            result = self.executor.execute(&a, &ctx) => match result {
                Ok(output) => match self.client.complete(task_id, self.agent_id, &output).await {
                    Ok(()) => Outcome::Completed(task_id),
                    Err(e) => {
                        tracing::warn!(%task_id, error = %e, "could not report completion");
                        Outcome::Failed(task_id)
                    }
                },
                Err(err) => {
                    if let Err(e) = self.client.fail(task_id, self.agent_id, &err).await {
                        tracing::warn!(%task_id, error = %e, "could not report failure");
                    }
                    Outcome::Failed(task_id)
                }
            },
            _ = cancel_rx => {
                tracing::info!(%task_id, "task cancelled; stopped");
                Outcome::Cancelled(task_id)
            }
        };
        if let Ok(mut o) = self.outcomes.lock() {
            o.push(outcome);
        }
    }
}
