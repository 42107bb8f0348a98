use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_sdk::{Executor, TaskContext, TaskError};
use schemas::agent::Assignment;
use serde_json::{json, Value};
use tests::{wait_until, System};
use uuid::Uuid;

/// An executor that records what it ran: `echo`, `sleep` ({secs}) and
/// `fail` ({retryable}); every other type echoes.
#[derive(Default)]
pub struct Recorder {
    pub running: AtomicI64,
    pub max_running: AtomicI64,
    pub started: Mutex<Vec<Uuid>>,
}

#[async_trait::async_trait]
impl Executor for Recorder {
    async fn execute(&self, task: &Assignment, ctx: &TaskContext) -> Result<Value, TaskError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        if let Ok(mut s) = self.started.lock() {
            s.push(task.task_id);
        }
        let result = match task.task_type.as_str() {
            "sleep" => {
                let secs = task.input["secs"].as_f64().unwrap_or(0.2);
                tokio::time::sleep(Duration::from_secs_f64(secs / 2.0)).await;
                ctx.progress(50, Some("half")).await;
                tokio::time::sleep(Duration::from_secs_f64(secs / 2.0)).await;
                Ok(json!({"slept": secs}))
            }
            "fail" => Err(TaskError {
                message: "asked to fail".into(),
                retryable: task.input["retryable"].as_bool().unwrap_or(true),
            }),
            _ => Ok(json!({"echo": task.input})),
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

pub struct Api {
    pub command: String,
    pub query: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(sys: &System) -> Self {
        Self {
            command: sys.command_url(),
            query: sys.query_url(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn submit(&self, body: Value) -> Uuid {
        let r = self
            .http
            .post(format!("{}/api/v1/tasks", self.command))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{status} {v}");
        v["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.command))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{status} {v}");
        v
    }

    pub async fn task(&self, id: Uuid) -> Value {
        self.http
            .get(format!("{}/api/v1/tasks/{id}", self.query))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn agent(&self, id: Uuid) -> Value {
        self.http
            .get(format!("{}/api/v1/agents/{id}", self.query))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until every task is in one of `statuses`; returns their views.
    pub async fn wait_all(
        &self,
        ids: &[Uuid],
        statuses: &[&str],
        limit: Duration,
    ) -> HashMap<Uuid, Value> {
        let out = Arc::new(Mutex::new(HashMap::new()));
        wait_until(limit, "tasks to finish", || {
            let out = out.clone();
            async move {
                for id in ids {
                    let v = self.task(*id).await;
                    if !statuses.iter().any(|s| v["status"] == *s) {
                        return false;
                    }
                    out.lock().unwrap().insert(*id, v);
                }
                true
            }
        })
        .await;
        let map = out.lock().unwrap().clone();
        map
    }
}
