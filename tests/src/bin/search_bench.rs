//! Vector and graph projection throughput, and search latency. A benchmark,
//! not a test: fills a private stream with task events (TaskSubmitted with
//! varied text, then TaskQueued and TaskAssigned), runs the vector projection
//! (Qdrant Edge + the built-in embedder) and the Postgres graph projection
//! over it, each alone, and times searches over the resulting points.
//!
//! `cargo run --release -p tests --bin search_bench -- [tasks] [queries]`
//! (defaults 10000 and 1000).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use projectors::graph::GraphProjection;
use projectors::runtime::{self, Projection, ProjectionStatus, RuntimeSettings};
use projectors::search::vectors::{Collection, Filter, Mode, Query};
use projectors::search::{Search, SearchSettings, VectorProjection};
use schemas::events::{TaskAssigned, TaskEvent, TaskQueued, TaskSubmitted};
use serde_json::json;
use tests::bench::{create_stream, percentile, publish_tasks};
use tests::{NatsServer, TestDb};
use uuid::Uuid;

const WORDS: [&str; 64] = [
    "invoice",
    "report",
    "summary",
    "customer",
    "contract",
    "translate",
    "german",
    "french",
    "photo",
    "caption",
    "audit",
    "inventory",
    "server",
    "outage",
    "backup",
    "database",
    "migration",
    "schedule",
    "meeting",
    "minutes",
    "budget",
    "forecast",
    "quarterly",
    "sales",
    "ticket",
    "support",
    "email",
    "reply",
    "draft",
    "legal",
    "review",
    "policy",
    "security",
    "vulnerability",
    "patch",
    "release",
    "notes",
    "mobile",
    "app",
    "website",
    "search",
    "index",
    "knowledge",
    "base",
    "podcast",
    "transcript",
    "video",
    "subtitle",
    "chart",
    "spreadsheet",
    "duplicate",
    "rows",
    "cleanup",
    "pipeline",
    "deploy",
    "kubernetes",
    "cluster",
    "latency",
    "metrics",
    "alert",
    "dashboard",
    "survey",
    "feedback",
    "onboarding",
];

fn rng(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

/// Runs one projection from the start of the stream until it reaches `last`.
async fn time_projection(
    pool: &sqlx::PgPool,
    js: &async_nats::jetstream::Context,
    projection: Arc<dyn Projection>,
    last: u64,
) -> f64 {
    let status = Arc::new(ProjectionStatus::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let settings = RuntimeSettings {
        consumer_prefix: format!("bench{}", Uuid::new_v4().simple()),
        batch_size: 500,
        ..RuntimeSettings::default()
    };
    let name = projection.name().to_string();
    let started = Instant::now();
    let handle = tokio::spawn(runtime::run(
        pool.clone(),
        js.clone(),
        projection,
        settings,
        status.clone(),
        stop,
    ));
    let mut last_report = Instant::now();
    while status.checkpoint.load(Ordering::Relaxed) < last {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "  {name}: {}/{last}",
                status.checkpoint.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = handle.await;
    assert_eq!(
        status.parked.load(Ordering::Relaxed),
        0,
        "{name}: nothing parked"
    );
    secs
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let queries: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let pool = db.pool().await;
    projectors::migrator().run(&pool).await.expect("migrate");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    create_stream(&js).await;
    eprintln!("publishing {} events for {tasks} tasks …", tasks * 3);
    let mut seed = 42u64;
    let agents: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    publish_tasks(
        &js,
        tasks,
        |i| {
            let text: Vec<&str> = (0..10)
                .map(|_| WORDS[(rng(&mut seed) % 64) as usize])
                .collect();
            vec![
                TaskEvent::TaskSubmitted(TaskSubmitted {
                    task_type: format!("kind.{}", i % 50),
                    input: json!({"text": text.join(" ")}),
                    required_capabilities: vec![format!("cap.{}", i % 12)],
                    priority: (i % 10) as u8,
                    target_agent_id: None,
                    schedule_at: None,
                    queue_timeout_secs: None,
                    execution_timeout_secs: None,
                    max_retries: 3,
                    idempotency_key: None,
                    parent_task_id: None,
                    depends_on: vec![],
                }),
                TaskEvent::TaskQueued(TaskQueued { attempt: 1 }),
                TaskEvent::TaskAssigned(TaskAssigned {
                    agent_id: agents[i % agents.len()],
                    attempt: 1,
                    lease_expires_at: chrono::Utc::now(),
                }),
            ]
        },
        "user",
    )
    .await;
    let events = tests::stream_last_sequence(&nats.url()).await;

    let mut settings = <SearchSettings as clap::FromArgMatches>::from_arg_matches(
        &<SearchSettings as clap::Args>::augment_args(clap::Command::new("bench"))
            .get_matches_from(["bench"]),
    )
    .expect("defaults");
    settings.vector_dir = db.vector_dir();
    let search = Search::open(&settings).await.expect("open Qdrant Edge");

    eprintln!("vector projection …");
    let vec_secs = time_projection(
        &pool,
        &js,
        Arc::new(VectorProjection::new(search.clone())),
        events,
    )
    .await;
    let points = search.store.count(Collection::Tasks).await.expect("count");
    println!(
        "vector projection (Qdrant Edge, hash embedder dim {}): {events} events in {vec_secs:.1} s = {:.0} events/s; {points} points",
        search.store.dimension(),
        events as f64 / vec_secs
    );
    eprintln!("graph projection …");
    let graph_secs =
        time_projection(&pool, &js, Arc::new(GraphProjection::postgres()), events).await;
    let edges: i64 = sqlx::query_scalar("SELECT count(*) FROM graph_edges")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    println!(
        "graph projection (Postgres): {events} events in {graph_secs:.1} s = {:.0} events/s; {edges} edges",
        events as f64 / graph_secs
    );

    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0);
    fn dir_bytes(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    println!(
        "Qdrant Edge directory: {:.1} MiB on disk",
        dir_bytes(&db.vector_dir()) as f64 / 1048576.0
    );
    println!(
        "peak RSS of this process (both projections, Qdrant Edge in process): {:.1} MiB",
        rss / 1024.0
    );
    for (mode, name) in [
        (Mode::Semantic, "semantic"),
        (Mode::Text, "text"),
        (Mode::Hybrid, "hybrid"),
    ] {
        let mut latencies = Vec::with_capacity(queries);
        for q in 0..queries {
            let text: Vec<&str> = (0..4)
                .map(|_| WORDS[(rng(&mut seed) % 64) as usize])
                .collect();
            let text = text.join(" ");
            let filter = if q % 2 == 0 {
                Filter::default()
            } else {
                Filter {
                    keyword: vec![("task_type".into(), format!("kind.{}", q % 50))],
                    ..Filter::default()
                }
            };
            let started = Instant::now();
            let dense = search.embed_one(&text).await.expect("embed");
            let hits = search
                .store
                .search(
                    Collection::Tasks,
                    Query {
                        mode,
                        dense,
                        sparse: search.sparse_query(&text),
                        filter,
                        limit: 10,
                    },
                )
                .await
                .expect("search");
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            assert!(!hits.is_empty() || q % 2 == 1);
        }
        latencies.sort_by(|a, b| a.total_cmp(b));
        println!(
            "search {name:>8} over {points} points (top 10, half filtered by type): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({queries} queries, embedding included)",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0.0)
        );
    }
}
