//! Helpers the benchmarks share: synthetic task events on a private stream,
//! percentiles, the read-model rebuild measurement, services as processes.

use std::time::Instant;

use schemas::events::{TaskEvent, TaskQueued, TaskSubmitted};
use schemas::{subjects, EventEnvelope, EventMetadata};
use serde_json::json;
use uuid::Uuid;

/// The envelope of one task event as the relay would publish it.
pub fn envelope(task: Uuid, sequence: i64, event: &TaskEvent, actor: &str) -> Vec<u8> {
    let id = task.to_string();
    let env = EventEnvelope {
        event_id: EventEnvelope::event_id_for(subjects::TASK, &id, sequence),
        aggregate_type: subjects::TASK.into(),
        aggregate_id: id,
        sequence,
        event_type: event.event_type().into(),
        event_version: event.event_version().into(),
        occurred_at: chrono::Utc::now(),
        metadata: EventMetadata {
            actor: actor.into(),
            correlation_id: "bench".into(),
            causation_id: "bench".into(),
            request_id: "bench".into(),
        },
        payload: serde_json::to_value(event).unwrap_or_default(),
        hash: None,
    };
    serde_json::to_vec(&env).unwrap_or_default()
}

/// The `p` quantile (0–1) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Creates the events stream on `js`.
pub async fn create_stream(js: &async_nats::jetstream::Context) {
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: subjects::DEFAULT_STREAM.into(),
        subjects: vec![subjects::EVENTS_WILDCARD.into()],
        ..Default::default()
    })
    .await
    .expect("stream");
}

/// Publishes each task's events in order, pipelined 4,096 acks at a time.
pub async fn publish_tasks(
    js: &async_nats::jetstream::Context,
    tasks: usize,
    mut events_of: impl FnMut(usize) -> Vec<TaskEvent>,
    actor: &str,
) {
    let mut pending = Vec::with_capacity(4096);
    for i in 0..tasks {
        let task = Uuid::new_v4();
        let subject = subjects::event_subject(subjects::TASK, &task.to_string());
        for (n, e) in events_of(i).iter().enumerate() {
            let body = envelope(task, n as i64 + 1, e, actor);
            pending.push(
                js.publish(subject.clone(), body.into())
                    .await
                    .expect("publish"),
            );
        }
        if pending.len() >= 4096 {
            for a in pending.drain(..) {
                a.await.expect("ack");
            }
        }
    }
    for a in pending.drain(..) {
        a.await.expect("ack");
    }
}

/// A TaskSubmitted and a TaskQueued for task number `i`.
pub fn submitted_and_queued(i: usize) -> Vec<TaskEvent> {
    vec![
        TaskEvent::TaskSubmitted(TaskSubmitted {
            task_type: if i.is_multiple_of(3) {
                "text.summarize".into()
            } else {
                "echo".into()
            },
            input: json!({"text": format!("benchmark task number {i} about quarterly reports")}),
            required_capabilities: vec!["echo".into()],
            priority: (i % 10) as u8,
            target_agent_id: None,
            schedule_at: None,
            queue_timeout_secs: None,
            execution_timeout_secs: Some(60),
            max_retries: 3,
            idempotency_key: None,
            parent_task_id: None,
            depends_on: vec![],
        }),
        TaskEvent::TaskQueued(TaskQueued { attempt: 1 }),
    ]
}

/// Fills a private stream with `events` task events and rebuilds the
/// Postgres read models from it; returns (publish events/s, the report).
pub async fn rebuild_read_models(
    events: usize,
    batch: usize,
) -> (f64, projectors::rebuild::RebuildReport) {
    let db = crate::TestDb::new().await;
    let nats = crate::NatsServer::start().await;
    let pool = db.pool().await;
    projectors::migrator().run(&pool).await.expect("migrate");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    create_stream(&js).await;
    eprintln!("rebuild: publishing {events} events …");
    let started = Instant::now();
    publish_tasks(&js, events / 2, submitted_and_queued, "bench").await;
    let publish_rate = events as f64 / started.elapsed().as_secs_f64();
    eprintln!("rebuild: published at {publish_rate:.0} events/s; rebuilding …");
    let mut last_report = Instant::now();
    let report = projectors::rebuild::rebuild(
        &pool,
        &js,
        subjects::DEFAULT_STREAM,
        &projectors::read_models::ReadModels,
        projectors::rebuild::Finish::Swap,
        batch,
        |done, end| {
            if last_report.elapsed().as_secs() >= 10 {
                eprintln!("  {done}/{end} events");
                last_report = Instant::now();
            }
        },
    )
    .await
    .expect("rebuild");
    (publish_rate, report)
}

/// A service binary running as its own process (for its RSS).
pub struct Service {
    pub name: &'static str,
    pub url: String,
    child: tokio::process::Child,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Service {
    /// Starts `target/<profile>/<binary>` (next to the running executable)
    /// with `env`, and waits for `/health/ready`.
    pub async fn start(
        name: &'static str,
        binary: &str,
        args: &[&str],
        env: &[(&str, String)],
        bind_var: &str,
    ) -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe.parent().expect("exe dir");
        let path = dir.join(binary);
        assert!(
            path.exists(),
            "{} not built: run `cargo build --release -p command-service -p projectors -p query-service` first",
            path.display()
        );
        let port = free_port();
        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(args)
            .env(bind_var, format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn service");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if http
                .get(format!("{url}/health/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Self { name, url, child };
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("{name} did not become ready");
    }

    /// Peak resident set size so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return 0.0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    /// SIGTERM, then wait.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), self.child.wait()).await;
    }
}
