//! Load generator: measures the system next to its physical baseline, in one
//! run, on this machine. A benchmark, not a test.
//!
//! ```text
//! cargo build --release -p command-service -p projectors -p query-service -p tests
//! cargo run --release -p tests --bin loadgen -- [--quick] [--json] [--secs N]
//!     [--rate R] [--visibility-secs S] [--relay-events N] [--relay-batch N] [--rebuild-events N]
//!     [--parts commands,queries,visibility,relay,rebuild] [--stages]
//! ```
//!
//! The three services run as their own processes (release binaries next to
//! this one) over a fresh database and a private nats-server; their peak RSS
//! (VmHWM) is read at the end. Before each figure and each baseline the run
//! waits until the outbox is empty and every projection has reached the
//! stream's end, so that neither pays for the backlog of the step before.
//! Parts:
//! 1. durable SubmitTask commands/s over HTTP at 1, 16 and 64 clients
//!    (p50/p95/p99) next to raw single-row INSERT commits at the same concurrency;
//! 2. `GET /api/v1/tasks/{id}` at 16 and 64 clients next to raw `SELECT` by key;
//! 3. end-to-end visibility: SubmitTask at a fixed rate (open loop), and for
//!    each the delay from its 2xx to the task being readable at that version
//!    from the query API (`min_version`, woken by the projector's commit);
//!    with `--stages`, also split into 2xx → stored in the stream → read model
//!    committed → read answered;
//! 4. the relay draining an outbox backlog next to raw pipelined JetStream
//!    publishes of same-sized messages (in process);
//! 5. a rebuild of the read models from a stream of N events.
//!
//! `--quick` (about 1.5 minutes): 2 s per throughput step, visibility for 10 s,
//! 20,000 relay events, 50,000 rebuild events.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tests::bench::{percentile as pct, Service};
use tests::{NatsServer, TestDb};
use uuid::Uuid;

/// The allocator of the service binaries (mimalloc; see `projectors/src/main.rs`):
/// the rebuild runs here in process, as it does in `projectors rebuild`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Visibility {
    target_per_sec: f64,
    achieved_per_sec: f64,
    secs: f64,
    commands: usize,
    failed: u64,
    /// Why, for the first failures (transport error or status).
    failures: Vec<String>,
    /// Reads answered with an error and tried again (after their
    /// `Retry-After`), by status and problem title: each retry after a 503
    /// adds a second to its command's delay.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    retried_reads: BTreeMap<String, u64>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Where the delay went (`--stages`), per command whose stages were all seen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stages: Vec<Stage>,
}

/// One stage of the visibility delay, over the commands whose every stage was seen.
#[derive(Debug, Clone, serde::Serialize)]
struct Stage {
    what: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Memory {
    service: String,
    peak_rss_mib: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Rebuild {
    events: u64,
    seconds: f64,
    events_per_sec: f64,
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    date: String,
    commit: String,
    cores: usize,
    quick: bool,
    throughput: Vec<Figure>,
    visibility: Option<Visibility>,
    memory: Vec<Memory>,
    rebuild: Option<Rebuild>,
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

/// Postgres allows 100 connections and the services hold about 50: the raw
/// baselines run their clients over at most 32 connections.
fn raw_connections(clients: usize) -> u32 {
    clients.min(32) as u32
}

/// The raw baselines' pool, set up as the services set up theirs (no ping
/// before each statement), so that a ratio measures what the service adds.
async fn raw_pool(db: &TestDb, clients: usize) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(raw_connections(clients))
        .test_before_acquire(false)
        .connect(&db.url)
        .await
        .expect("pool")
}

fn figure(what: &str, clients: usize, rate: f64, lat: &[f64], raw: f64) -> Figure {
    Figure {
        what: what.into(),
        clients,
        per_sec: rate,
        p50_ms: pct(lat, 0.5),
        p95_ms: pct(lat, 0.95),
        p99_ms: pct(lat, 0.99),
        baseline_per_sec: raw,
        ratio: rate / raw.max(1e-9),
    }
}

/// Waits until the system has caught up with what was sent so far: the
/// outbox empty and every projection (and the coordinator's view) at the
/// stream's end. Each figure and its baseline then start from an idle
/// machine, neither paying for the previous step's backlog.
async fn settle(db: &TestDb, nats_url: &str) {
    let started = Instant::now();
    let pool = db.pool().await;
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.expect("nats"));
    let stream_end = || async {
        match js.get_stream(schemas::subjects::DEFAULT_STREAM).await {
            Ok(mut s) => s.info().await.map_or(0, |i| i.state.last_sequence as i64),
            Err(_) => 0,
        }
    };
    loop {
        let end = stream_end().await;
        let outbox_empty = tests::outbox_empty(&pool).await;
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT stream_sequence FROM projector_checkpoints \
               UNION ALL SELECT stream_sequence FROM coordinator_checkpoint) c \
             WHERE stream_sequence < $1",
        )
        .bind(end)
        .fetch_one(&pool)
        .await
        .unwrap_or(i64::MAX);
        if outbox_empty && behind == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            let outbox = tests::outbox_len(&pool).await;
            eprintln!("  (not settled after 300 s: outbox {outbox}, {behind} projection(s) behind; going on)");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The last batches' commits, checkpoints and acks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("  settled in {:.1} s", started.elapsed().as_secs_f64());
}

async fn commands(
    db: &TestDb,
    nats_url: &str,
    command_url: &str,
    secs: f64,
    out: &mut Vec<Figure>,
) {
    let pool = db.pool().await;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_events (aggregate_type text, aggregate_id text, \
         sequence bigint, event_type text, event_version text, payload json, metadata json, \
         PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    )
    .execute(&pool)
    .await
    .expect("baseline table");
    let http = Http::new();
    let (submit, body) = submit_task(command_url, "load");
    for clients in [1usize, 16, 64] {
        settle(db, nats_url).await;
        eprintln!("commands at {clients} client(s) for {secs} s …");
        let (h, uri, body) = (http.clone(), submit.clone(), body.clone());
        let (rate, lat) = drive(clients, secs, move |_| {
            let (h, uri, body) = (h.clone(), uri.clone(), body.clone());
            async move {
                h.post_json(uri, body)
                    .await
                    .is_ok_and(|a| a.status.is_success())
            }
        })
        .await;
        settle(db, nats_url).await;
        let raw_pool = raw_pool(db, clients).await;
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
        out.push(figure(
            "SubmitTask over HTTP vs raw INSERT commit",
            clients,
            rate,
            &lat,
            raw,
        ));
    }
}

async fn queries(db: &TestDb, nats_url: &str, query_url: &str, secs: f64, out: &mut Vec<Figure>) {
    let pool = db.pool().await;
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM tasks LIMIT 2000")
        .fetch_all(&pool)
        .await
        .expect("task ids");
    assert!(
        !ids.is_empty(),
        "queries need tasks: run the commands part first"
    );
    let uris: Vec<http::Uri> = ids
        .iter()
        .map(|id| format!("{query_url}/api/v1/tasks/{id}").parse())
        .collect::<Result<_, _>>()
        .expect("task URIs");
    let (ids, uris) = (Arc::new(ids), Arc::new(uris));
    let http = Http::new();
    for clients in [16usize, 64] {
        settle(db, nats_url).await;
        eprintln!("queries at {clients} clients for {secs} s …");
        let (h, uris2) = (http.clone(), uris.clone());
        let (rate, lat) = drive(clients, secs, move |i| {
            let (h, uri) = (h.clone(), uris2[i % uris2.len()].clone());
            async move { h.get_ok(uri).await }
        })
        .await;
        let raw_pool = raw_pool(db, clients).await;
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
        out.push(figure(
            "GET /api/v1/tasks/{id} vs raw SELECT by key",
            clients,
            rate,
            &lat,
            raw,
        ));
    }
}

/// The URI and body of a SubmitTask of an `echo` task with `text` as its input.
fn submit_task(command_url: &str, text: &str) -> (http::Uri, bytes::Bytes) {
    let uri = format!("{command_url}/api/v1/tasks")
        .parse()
        .expect("submit URI");
    let body = json!({"task_type": "echo", "input": {"text": text}}).to_string();
    (uri, bytes::Bytes::from(body))
}

/// Open loop at `rate` for `secs`: each command's 2xx → readable at its version.
async fn visibility(
    command_url: &str,
    query_url: &str,
    rate: f64,
    secs: f64,
    stages: Option<(&str, &str)>,
) -> Visibility {
    eprintln!("visibility at {rate} commands/s for {secs} s …");
    let watch = match stages {
        Some((nats_url, db_url)) => Some(StageWatch::start(nats_url, db_url).await),
        None => None,
    };
    let http = Http::new();
    let (submit, body) = submit_task(command_url, "visible?");
    let total = (rate * secs) as usize;
    let failed = Arc::new(AtomicU64::new(0));
    let reasons = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let retried = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(total);
    for _ in 0..total {
        ticker.tick().await;
        let (h, submit, body, q, failed, reasons, retried) = (
            http.clone(),
            submit.clone(),
            body.clone(),
            query_url.to_string(),
            failed.clone(),
            reasons.clone(),
            retried.clone(),
        );
        let fail = move |why: String| {
            failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut r) = reasons.lock() {
                if r.len() < 5 {
                    r.push(why);
                }
            }
        };
        handles.push(tokio::spawn(async move {
            let r = h.post_json(submit, body).await;
            let (acked, acked_at) = (Instant::now(), SystemTime::now());
            let body: serde_json::Value = match r {
                Ok(a) if a.status.is_success() => {
                    serde_json::from_slice(&a.body).unwrap_or_default()
                }
                Ok(a) => {
                    let problem: serde_json::Value =
                        serde_json::from_slice(&a.body).unwrap_or_default();
                    fail(format!(
                        "submit answered {}: {}",
                        a.status, problem["detail"]
                    ));
                    return None;
                }
                Err(e) => {
                    fail(format!("submit: {e}"));
                    return None;
                }
            };
            let (Some(id), Some(version)) = (body["id"].as_str(), body["version"].as_i64()) else {
                fail(format!("submit answered {body}"));
                return None;
            };
            // min_version waits (up to 2 s per call) until the projection
            // has it; a 503 says when to come back (Retry-After), as a
            // well-behaved client would.
            let mut last = String::new();
            let uri: http::Uri =
                match format!("{q}/api/v1/tasks/{id}?min_version={version}").parse() {
                    Ok(uri) => uri,
                    Err(e) => {
                        fail(format!("read URI: {e}"));
                        return None;
                    }
                };
            for _ in 0..15 {
                match h.get(uri.clone()).await {
                    Ok(a) if a.status.is_success() => {
                        return Some(Seen {
                            id: id.to_string(),
                            version,
                            acked_ns: unix_ns(acked_at),
                            visible_ns: unix_ns(SystemTime::now()),
                            ms: acked.elapsed().as_secs_f64() * 1000.0,
                        });
                    }
                    Ok(a) => {
                        let problem: serde_json::Value =
                            serde_json::from_slice(&a.body).unwrap_or_default();
                        last = format!("read answered {} {}", a.status, problem["title"]);
                        if let Ok(mut r) = retried.lock() {
                            *r.entry(last.clone()).or_default() += 1;
                        }
                        let retry_after = a
                            .headers
                            .get(http::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        if let Some(secs) = retry_after {
                            tokio::time::sleep(Duration::from_secs(secs.min(5))).await;
                        }
                    }
                    Err(e) => last = format!("read: {e}"),
                }
            }
            fail(last);
            None
        }));
    }
    let submitted_in = started.elapsed().as_secs_f64();
    let mut seen = Vec::with_capacity(total);
    for h in handles {
        if let Ok(Some(s)) = h.await {
            seen.push(s);
        }
    }
    let mut lat: Vec<f64> = seen.iter().map(|s| s.ms).collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let stages = match watch {
        Some(w) => w.stages(&seen).await,
        None => Vec::new(),
    };
    Visibility {
        target_per_sec: rate,
        achieved_per_sec: total as f64 / submitted_in,
        secs,
        commands: total,
        failed: failed.load(Ordering::Relaxed),
        failures: reasons.lock().map(|r| r.clone()).unwrap_or_default(),
        retried_reads: retried.lock().map(|r| r.clone()).unwrap_or_default(),
        p50_ms: pct(&lat, 0.5),
        p99_ms: pct(&lat, 0.99),
        max_ms: lat.last().copied().unwrap_or(0.0),
        stages,
    }
}

/// A command of the visibility run that became readable.
struct Seen {
    id: String,
    version: i64,
    acked_ns: i128,
    visible_ns: i128,
    ms: f64,
}

fn unix_ns(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Watches the two points between a command's 2xx and its read: the event
/// stored in the stream (JetStream's own timestamp, read through an ordered
/// consumer) and the read-model projection's commit that holds it (its
/// commit notification, `<projection>:<checkpoint>`). All on this machine's
/// one clock. The consumer and the listener add a little load of their own,
/// which is why `--stages` is not the default.
struct StageWatch {
    stop: tokio::sync::watch::Sender<bool>,
    /// Message id → (stream sequence, stored at, ns since the epoch).
    stored: tokio::task::JoinHandle<HashMap<String, (u64, i128)>>,
    /// (committed at, checkpoint), in the order they came.
    commits: tokio::task::JoinHandle<Vec<(i128, u64)>>,
}

impl StageWatch {
    async fn start(nats_url: &str, db_url: &str) -> Self {
        use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
        use futures::StreamExt;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.expect("nats"));
        let mut messages = js
            .get_stream(schemas::subjects::DEFAULT_STREAM)
            .await
            .expect("stream")
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .expect("ordered consumer")
            .messages()
            .await
            .expect("messages");
        let mut stop_stored = stopped.clone();
        let stored = tokio::spawn(async move {
            let mut stored = HashMap::new();
            loop {
                // After the stop, what is still on its way (the run waited
                // for every read, so every event is in the stream already).
                let next = if *stop_stored.borrow() {
                    match tokio::time::timeout(Duration::from_millis(500), messages.next()).await {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                } else {
                    tokio::select! {
                        m = messages.next() => m,
                        _ = stop_stored.changed() => continue,
                    }
                };
                let Some(Ok(m)) = next else { break };
                let (Ok(info), Some(id)) = (
                    m.info(),
                    m.headers
                        .as_ref()
                        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID)),
                ) else {
                    continue;
                };
                stored.insert(
                    id.to_string(),
                    (info.stream_sequence, info.published.unix_timestamp_nanos()),
                );
            }
            stored
        });
        let mut listener = sqlx::postgres::PgListener::connect(db_url)
            .await
            .expect("listener");
        listener
            .listen(projectors::runtime::CHECKPOINT_CHANNEL)
            .await
            .expect("LISTEN");
        let mut stop_commits = stopped;
        let commits = tokio::spawn(async move {
            let mut commits = Vec::new();
            loop {
                tokio::select! {
                    n = listener.recv() => {
                        let Ok(n) = n else { break };
                        let at = unix_ns(SystemTime::now());
                        if let Some((projectors::read_models::NAME, seq)) = n.payload().split_once(':') {
                            if let Ok(seq) = seq.parse() {
                                commits.push((at, seq));
                            }
                        }
                    }
                    _ = stop_commits.changed() => break,
                }
            }
            commits
        });
        Self {
            stop,
            stored,
            commits,
        }
    }

    /// Each stage's p50/p99/max over the commands whose every point was seen.
    async fn stages(self, seen: &[Seen]) -> Vec<Stage> {
        let _ = self.stop.send(true);
        let stored = self.stored.await.unwrap_or_default();
        let commits = self.commits.await.unwrap_or_default();
        let mut parts: [Vec<f64>; 3] = Default::default();
        for s in seen {
            let msg_id = schemas::subjects::message_id(schemas::subjects::TASK, &s.id, s.version);
            let Some(&(seq, stored_ns)) = stored.get(&msg_id) else {
                continue;
            };
            // Checkpoints only grow: the first commit at or past the event.
            let i = commits.partition_point(|&(_, c)| c < seq);
            let Some(&(committed_ns, _)) = commits.get(i) else {
                continue;
            };
            let ms = |from: i128, to: i128| (to - from) as f64 / 1e6;
            parts[0].push(ms(s.acked_ns, stored_ns));
            parts[1].push(ms(stored_ns, committed_ns));
            parts[2].push(ms(committed_ns, s.visible_ns));
        }
        eprintln!(
            "  stages seen for {} of {} commands ({} stored events, {} read-model commits)",
            parts[0].len(),
            seen.len(),
            stored.len(),
            commits.len()
        );
        let names = [
            "2xx → stored in the stream (relay)",
            "stored → read model committed (projector)",
            "committed → read answered (query service)",
        ];
        names
            .into_iter()
            .zip(parts)
            .map(|(what, mut lat)| {
                lat.sort_by(|a, b| a.total_cmp(b));
                Stage {
                    what,
                    p50_ms: pct(&lat, 0.5),
                    p99_ms: pct(&lat, 0.99),
                    max_ms: lat.last().copied().unwrap_or(0.0),
                }
            })
            .collect()
    }
}

/// The relay draining a backlog next to raw JetStream publishes (in process).
async fn relay_drain(events: i64, relay_batch: u32) -> Figure {
    eprintln!("relay: filling an outbox backlog of {events} events …");
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
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
    eprintln!("relay: draining the backlog …");
    let started = Instant::now();
    let mut c = tests::config(&db, &nats);
    c.relay_batch_size = relay_batch;
    let server = tests::start_service(c).await;
    while !tests::outbox_empty(&pool).await {
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
    figure(
        &format!("relay drain of {events} vs raw JetStream publish"),
        1,
        rate,
        &[],
        raw,
    )
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let as_json = args.iter().any(|a| a == "--json");
    let stages = args.iter().any(|a| a == "--stages");
    let secs: f64 = arg(&args, "--secs").unwrap_or(if quick { 2.0 } else { 10.0 });
    let rate: f64 = arg(&args, "--rate").unwrap_or(1000.0);
    let vis_secs: f64 = arg(&args, "--visibility-secs").unwrap_or(if quick { 10.0 } else { 30.0 });
    let relay_events: i64 =
        arg(&args, "--relay-events").unwrap_or(if quick { 20_000 } else { 100_000 });
    let relay_batch: u32 = arg(&args, "--relay-batch").unwrap_or(1000);
    let rebuild_events: usize =
        arg(&args, "--rebuild-events").unwrap_or(if quick { 50_000 } else { 500_000 });
    let parts: Vec<String> = arg::<String>(&args, "--parts")
        .unwrap_or_else(|| "commands,queries,visibility,relay,rebuild".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let wants = |p: &str| parts.iter().any(|x| x == p);
    let begun = Instant::now();
    let mut report = Report {
        date: chrono::Utc::now().to_rfc3339(),
        commit: std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        quick,
        ..Report::default()
    };

    if wants("commands") || wants("queries") || wants("visibility") {
        eprintln!("starting the services as processes (fresh database, private nats-server) …");
        let db = TestDb::new().await;
        let nats = NatsServer::start().await;
        let vector_dir = db.vector_dir();
        let env = vec![
            ("DATABASE_URL", db.url.clone()),
            ("NATS_URL", nats.url()),
            ("VECTOR_DIR", vector_dir.display().to_string()),
        ];
        let command = Service::start(
            "command-service",
            "command-service",
            &[],
            &env,
            "COMMAND_BIND",
        )
        .await;
        let projectors = Service::start(
            "projectors",
            "projectors",
            &["run"],
            &env,
            "PROJECTORS_BIND",
        )
        .await;
        let query = Service::start("query-service", "query-service", &[], &env, "QUERY_BIND").await;
        if wants("commands") || wants("queries") {
            commands(&db, &nats.url(), &command.url, secs, &mut report.throughput).await;
        }
        if wants("queries") {
            queries(&db, &nats.url(), &query.url, secs, &mut report.throughput).await;
        }
        if wants("visibility") {
            settle(&db, &nats.url()).await;
            let watch = stages.then(|| (nats.url(), db.url.clone()));
            report.visibility = Some(
                visibility(
                    &command.url,
                    &query.url,
                    rate,
                    vis_secs,
                    watch.as_ref().map(|(n, d)| (n.as_str(), d.as_str())),
                )
                .await,
            );
        }
        for s in [&command, &projectors, &query] {
            report.memory.push(Memory {
                service: s.name.into(),
                peak_rss_mib: s.peak_rss_mib(),
            });
        }
        for s in [command, projectors, query] {
            s.stop().await;
        }
    }
    if wants("relay") {
        report
            .throughput
            .push(relay_drain(relay_events, relay_batch).await);
    }
    if wants("rebuild") {
        let (_, r) =
            tests::bench::rebuild_read_models(rebuild_events, projectors::rebuild::DEFAULT_BATCH)
                .await;
        report.rebuild = Some(Rebuild {
            events: r.events,
            seconds: r.seconds,
            events_per_sec: r.events_per_second,
        });
    }
    eprintln!("done in {:.0} s", begun.elapsed().as_secs_f64());

    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return;
    }
    println!(
        "loadgen {} — commit {} — {} cores{}",
        report.date,
        report.commit,
        report.cores,
        if quick { " — quick" } else { "" }
    );
    println!(
        "{:<46} {:>7} {:>10} {:>8} {:>8} {:>8} {:>12} {:>6}",
        "measure", "clients", "per s", "p50 ms", "p95 ms", "p99 ms", "baseline/s", "ratio"
    );
    for f in &report.throughput {
        println!(
            "{:<46} {:>7} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>12.0} {:>6.2}",
            f.what, f.clients, f.per_sec, f.p50_ms, f.p95_ms, f.p99_ms, f.baseline_per_sec, f.ratio
        );
    }
    if let Some(v) = &report.visibility {
        println!(
            "visibility at {:.0}/s for {:.0} s ({} commands, {:.0}/s reached, {} failed): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            v.target_per_sec, v.secs, v.commands, v.achieved_per_sec, v.failed, v.p50_ms, v.p99_ms, v.max_ms
        );
        for st in &v.stages {
            println!(
                "  {:<44} p50 {:>6.1} ms, p99 {:>6.1} ms, max {:>6.1} ms",
                st.what, st.p50_ms, st.p99_ms, st.max_ms
            );
        }
        for why in &v.failures {
            println!("  failure: {why}");
        }
        for (why, n) in &v.retried_reads {
            println!("  {n} reads retried: {why}");
        }
    }
    for m in &report.memory {
        println!("peak RSS {:<16} {:>7.1} MiB", m.service, m.peak_rss_mib);
    }
    if let Some(r) = &report.rebuild {
        println!(
            "rebuild of the read models: {} events in {:.1} s = {:.0} events/s",
            r.events, r.seconds, r.events_per_sec
        );
    }
}

/// The load generator's HTTP client: hyper's own HTTP/1 client over
/// kept-alive connections, each GET's URI parsed once before the run where it
/// can be. The load generator shares the machine's two cores with what it
/// measures, so its own cost per request is taken from the system's figure:
/// reqwest (URL parsing and normalisation, header maps, redirect and proxy
/// handling per request) took about a third of a core at 10,000 GETs/s.
#[derive(Clone)]
struct Http(hyper_util::client::legacy::Client<HttpConnector, Full<bytes::Bytes>>);

/// An answer: status, headers and the whole body.
struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

impl Http {
    fn new() -> Self {
        Self(
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(512)
                .build_http(),
        )
    }

    /// Whether `GET uri` answers a 2xx, its body read to the end.
    async fn get_ok(&self, uri: http::Uri) -> bool {
        self.get(uri).await.is_ok_and(|a| a.status.is_success())
    }

    async fn get(&self, uri: http::Uri) -> Result<Answer, String> {
        let request = http::Request::get(uri)
            .body(Full::default())
            .map_err(|e| e.to_string())?;
        self.send(request).await
    }

    /// `POST uri` with a JSON body, as the `loadgen` actor.
    async fn post_json(&self, uri: http::Uri, body: bytes::Bytes) -> Result<Answer, String> {
        let request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("X-Actor", "loadgen")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        self.send(request).await
    }

    async fn send(&self, request: http::Request<Full<bytes::Bytes>>) -> Result<Answer, String> {
        let response = self.0.request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
