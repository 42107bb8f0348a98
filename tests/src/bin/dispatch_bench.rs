//! Dispatch latency benchmark: the delay from a task being queued to its
//! agent being notified, over real Postgres, a private NATS server, the
//! command service with its coordinator, and SDK agents, all on this machine.
//!
//! `cargo run --release -p tests --bin dispatch_bench -- [tasks] [clients] [rate]`
//! (defaults 1000, 8 and 100 tasks/s; rate 0 submits as fast as the clients
//! can). Prints p50/p99/max; it is a benchmark, not a test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_sdk::{Executor, TaskContext, TaskError};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use schemas::agent::Assignment;
use serde_json::{json, Value};
use tests::{agent_options, System};
use uuid::Uuid;

struct Echo;

#[async_trait::async_trait]
impl Executor for Echo {
    async fn execute(&self, task: &Assignment, _: &TaskContext) -> Result<Value, TaskError> {
        Ok(task.input.clone())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let clients: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8).max(1);
    let rate: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100.0);
    eprintln!("starting Postgres database, nats-server, services and 4 agents …");
    let sys = System::start_coordinated().await;
    // Observe every assignment notification as the agents receive it.
    let observer = async_nats::connect(sys.nats.url()).await.expect("nats");
    let mut notices = observer
        .subscribe("sutazai.agents.*.tasks.assigned")
        .await
        .expect("subscribe");
    let received: Arc<Mutex<HashMap<Uuid, DateTime<Utc>>>> = Arc::default();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Some(m) = notices.next().await {
            let at = Utc::now();
            if let Ok(a) = serde_json::from_slice::<Assignment>(&m.payload) {
                if let Ok(mut r) = sink.lock() {
                    r.entry(a.task_id).or_insert(at);
                }
            }
        }
    });
    let mut agents = Vec::new();
    for _ in 0..4 {
        let mut o = agent_options(
            &sys.command_url(),
            &sys.query_url(),
            &sys.nats,
            &["echo"],
            64,
        );
        o.heartbeat_every = Duration::from_secs(1);
        agents.push(agent_sdk::start(o, Arc::new(Echo)).await.expect("agent"));
    }
    eprintln!("submitting {tasks} tasks from {clients} clients at {rate} tasks/s (0 = unpaced) …");
    let per_client = (rate > 0.0).then(|| Duration::from_secs_f64(clients as f64 / rate));
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let (http, url) = (http.clone(), sys.command_url());
        let n = tasks / clients + usize::from(c < tasks % clients);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(n);
            let mut pace = per_client.map(tokio::time::interval);
            for i in 0..n {
                if let Some(p) = pace.as_mut() {
                    p.tick().await;
                }
                let r = http
                    .post(format!("{url}/api/v1/tasks"))
                    .json(&json!({"task_type": "echo", "input": {"i": i}, "required_capabilities": ["echo"]}))
                    .send()
                    .await
                    .expect("submit");
                let v: Value = r.json().await.expect("answer");
                ids.push(v["id"].as_str().and_then(|s| s.parse::<Uuid>().ok()).expect("id"));
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.await.expect("client"));
    }
    let submit_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.lock().map(|r| r.len()).unwrap_or(0) < ids.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queued: Vec<(String, String)> = sqlx::query_as(
        "SELECT aggregate_id, metadata->>'occurred_at' FROM events \
         WHERE aggregate_type = 'task' AND event_type = 'TaskQueued' AND sequence = 2",
    )
    .fetch_all(&sys.pool)
    .await
    .expect("read queue times");
    let received = received.lock().map(|r| r.clone()).unwrap_or_default();
    let mut latencies: Vec<f64> = queued
        .iter()
        .filter_map(|(id, at)| {
            let id: Uuid = id.parse().ok()?;
            let at: DateTime<Utc> = at.parse().ok()?;
            let got = received.get(&id)?;
            Some((*got - at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "dispatch latency (TaskQueued → agent notified), {} tasks, {clients} clients, target rate {rate}/s, 4 agents",
        latencies.len()
    );
    println!(
        "  submitted in {submit_secs:.2} s ({:.0} tasks/s)",
        ids.len() as f64 / submit_secs
    );
    if latencies.is_empty() {
        println!("  no task was dispatched");
    } else {
        println!(
            "  p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   (not notified: {})",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1],
            ids.len() - latencies.len()
        );
    }
    for a in agents {
        a.stop().await;
    }
    sys.stop().await;
}
