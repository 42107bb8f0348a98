//! Load generator (first part of the performance issue): measures the system
//! next to its physical baseline, in one run, on this machine.
//!
//! `cargo run --release -p tests --bin loadgen -- [--quick] [--json] [--secs N]`
//!
//! Measured so far: durable SubmitTask commands/s over HTTP at 1, 16 and 64
//! clients (p50/p95/p99) next to raw single-row INSERT commits/s at the same
//! concurrency; `GET /api/v1/tasks/{id}` requests/s and p99 at 16 and 64
//! clients next to raw `SELECT` by primary key; the relay draining an outbox
//! backlog (100,000 events, 20,000 with `--quick`) next to raw pipelined
//! JetStream publishes of same-sized messages. Not yet: end-to-end visibility
//! at a fixed rate, rebuild (see `rebuild_bench`), peak RSS per service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::System;
use uuid::Uuid;

#[derive(Debug, Clone, serde::Serialize)]
struct Figure {
    what: String,
    clients: usize,
    per_sec: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    baseline_per_sec: f64,
    ratio: f64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// Runs `op` from `clients` tasks for `secs`; returns (ops/s, sorted latencies ms).
async fn drive<F, Fut>(clients: usize, secs: f64, op: F) -> (f64, Vec<f64>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(c * 1_000_000 + i).await {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    (all.len() as f64 / elapsed, all)
}

/// The relay draining a backlog next to raw JetStream publishes.
async fn relay_drain(events: i64) -> Figure {
    eprintln!("relay: filling an outbox backlog of {events} events …");
    let db = tests::TestDb::new().await;
    let nats = tests::NatsServer::start().await;
    let pool = db.pool().await;
    command_service::migrator()
        .run(&pool)
        .await
        .expect("migrate");
    sqlx::query(
        "INSERT INTO events SELECT 'task', 't' || g, 1, 'TaskSubmitted', '1.0', \
            json_build_object('TaskSubmitted', json_build_object('task_type', 'echo', 'input', \
                json_build_object('text', repeat('x', 200)), 'required_capabilities', '[]'::json, \
                'priority', 5, 'max_retries', 3, 'depends_on', '[]'::json)), \
            json_build_object('actor', 'bench', 'correlation_id', 'c' || g, 'causation_id', 'k', \
                'request_id', 'r', 'occurred_at', now()) \
         FROM generate_series(1, $1) g",
    )
    .bind(events)
    .execute(&pool)
    .await
    .expect("backlog");
    let started = Instant::now();
    let mut c = tests::config(&db, &nats);
    c.relay_batch_size = 1000;
    let server = tests::start_service(c).await;
    loop {
        if tests::outbox_len(&pool).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relay_secs = started.elapsed().as_secs_f64();
    server.shutdown().await.ok();

    // Raw: the same number of same-sized messages, pipelined 1,000 at a time.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "RAW_BASELINE".into(),
        subjects: vec!["raw.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let body = bytes::Bytes::from(vec![b'x'; 700]);
    let started = Instant::now();
    let mut pending = Vec::with_capacity(1000);
    for i in 0..events {
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(body.clone())
            .message_id(format!("raw/{i}"));
        pending.push(
            js.send_publish(format!("raw.task.{i}"), msg)
                .await
                .expect("publish"),
        );
        if pending.len() == 1000 {
            for a in pending.drain(..) {
                a.await.expect("ack");
            }
        }
    }
    for a in pending.drain(..) {
        a.await.expect("ack");
    }
    let raw_secs = started.elapsed().as_secs_f64();
    let (rate, raw) = (events as f64 / relay_secs, events as f64 / raw_secs);
    Figure {
        what: format!("relay drain of {events} vs raw JetStream publish"),
        clients: 1,
        per_sec: rate,
        p50_ms: 0.0,
        p95_ms: 0.0,
        p99_ms: 0.0,
        baseline_per_sec: raw,
        ratio: rate / raw.max(1e-9),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let as_json = args.iter().any(|a| a == "--json");
    let secs: f64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 3.0 } else { 10.0 });
    eprintln!("starting the system (fresh database, private nats-server) …");
    let sys = System::start().await;
    let pool = sys.pool.clone();
    sqlx::query(
        "CREATE TABLE bench_events (aggregate_type text, aggregate_id text, sequence bigint, \
         event_type text, event_version text, payload json, metadata json, \
         PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    )
    .execute(&pool)
    .await
    .expect("baseline table");
    let http = reqwest::Client::new();
    let mut figures = Vec::new();

    for clients in [1usize, 16, 64] {
        eprintln!("commands at {clients} client(s) for {secs} s …");
        let (h, url) = (http.clone(), sys.command_url());
        let (rate, lat) = drive(clients, secs, move |_| {
            let (h, url) = (h.clone(), url.clone());
            async move {
                h.post(format!("{url}/api/v1/tasks"))
                    .json(&json!({"task_type": "echo", "input": {"text": "load"}}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        let raw_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(clients as u32)
            .connect(&sys.db.url)
            .await
            .expect("pool");
        let (raw, _) = drive(clients, secs, move |i| {
            let pool = raw_pool.clone();
            async move {
                sqlx::query(
                    "INSERT INTO bench_events VALUES ('task', $1, 1, 'TaskSubmitted', '1.0', \
                     '{\"TaskSubmitted\":{\"task_type\":\"echo\"}}', '{\"actor\":\"bench\"}')",
                )
                .bind(format!("{}-{i}", Uuid::new_v4()))
                .execute(&pool)
                .await
                .is_ok()
            }
        })
        .await;
        figures.push(Figure {
            what: "SubmitTask over HTTP vs raw INSERT commit".into(),
            clients,
            per_sec: rate,
            p50_ms: pct(&lat, 0.5),
            p95_ms: pct(&lat, 0.95),
            p99_ms: pct(&lat, 0.99),
            baseline_per_sec: raw,
            ratio: rate / raw.max(1e-9),
        });
    }
    sys.caught_up().await;
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM tasks LIMIT 2000")
        .fetch_all(&pool)
        .await
        .expect("task ids");
    let ids = Arc::new(ids);
    for clients in [16usize, 64] {
        eprintln!("queries at {clients} clients for {secs} s …");
        let (h, url, ids2) = (http.clone(), sys.query_url(), ids.clone());
        let (rate, lat) = drive(clients, secs, move |i| {
            let (h, url, id) = (h.clone(), url.clone(), ids2[i % ids2.len()]);
            async move {
                h.get(format!("{url}/api/v1/tasks/{id}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        let raw_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(clients as u32)
            .connect(&sys.db.url)
            .await
            .expect("pool");
        let ids3 = ids.clone();
        let (raw, _) = drive(clients, secs, move |i| {
            let (pool, id) = (raw_pool.clone(), ids3[i % ids3.len()]);
            async move {
                sqlx::query("SELECT * FROM tasks WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
                    .is_ok()
            }
        })
        .await;
        figures.push(Figure {
            what: "GET /api/v1/tasks/{id} vs raw SELECT by key".into(),
            clients,
            per_sec: rate,
            p50_ms: pct(&lat, 0.5),
            p95_ms: pct(&lat, 0.95),
            p99_ms: pct(&lat, 0.99),
            baseline_per_sec: raw,
            ratio: rate / raw.max(1e-9),
        });
    }
    figures.push(relay_drain(if quick { 20_000 } else { 100_000 }).await);
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&figures).unwrap_or_default()
        );
    } else {
        println!(
            "{:<46} {:>7} {:>10} {:>8} {:>8} {:>8} {:>12} {:>6}",
            "measure", "clients", "per s", "p50 ms", "p95 ms", "p99 ms", "baseline/s", "ratio"
        );
        for f in &figures {
            println!(
                "{:<46} {:>7} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>12.0} {:>6.2}",
                f.what,
                f.clients,
                f.per_sec,
                f.p50_ms,
                f.p95_ms,
                f.p99_ms,
                f.baseline_per_sec,
                f.ratio
            );
        }
    }
    sys.stop().await;
}
