//! Test harness for end-to-end tests against the real services: a fresh
//! Postgres database per test, a private `nats-server` per test (own port,
//! own store directory), the command service started in process, and readers
//! for what reached the JetStream stream.
//!
//! Environment: `TEST_DATABASE_ADMIN_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `NATS_SERVER_BIN`
//! (default `nats-server` on the PATH, else `/usr/sbin/nats-server`).
#![forbid(unsafe_code)]

pub mod bench;

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use command_service::{Config, Server};
use schemas::EventEnvelope;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

pub use reqwest;

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("sutazai_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("connect to the Postgres admin database");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let base = admin_url();
        let url = match base.rfind('/') {
            Some(i) => format!("{}/{name}", &base[..i]),
            None => panic!("TEST_DATABASE_ADMIN_URL has no database part"),
        };
        Self { name, url }
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl TestDb {
    /// A private directory for this test's Qdrant Edge store.
    pub fn vector_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("sutazai-vectors-{}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.vector_dir());
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A private JetStream server on its own port and store directory.
pub struct NatsServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn nats_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return p.into();
    }
    let on_path = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if on_path {
        "nats-server".into()
    } else {
        "/usr/sbin/nats-server".into()
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl NatsServer {
    pub async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.resume().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub async fn resume(&mut self) {
        let child = Command::new(nats_bin())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (install the nats-server package)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until(Duration::from_secs(10), "nats-server to listen", || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        })
        .await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` until it returns true, panicking after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Test configuration: defaults, pointed at the given stores, fast relay polls.
pub fn config(db: &TestDb, nats: &NatsServer) -> Config {
    let mut c = Config::local();
    c.database_url = db.url.clone();
    c.nats_url = nats.url();
    c.stream_name = schemas::subjects::DEFAULT_STREAM.into();
    c.relay_poll_ms = 50;
    c.relay_standby_poll_ms = 100;
    c.database_max_connections = 8;
    c.api_tokens = None;
    // Spine and read-side tests drive tasks by hand; the coordinator tests
    // turn it on.
    c.coordinator_enabled = false;
    c
}

/// Starts the command service in process on a free port.
pub async fn start_service(config: Config) -> Server {
    if std::env::var("RUST_LOG").is_ok() {
        service_kit::telemetry::init("text");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    Server::start(config, listener)
        .await
        .expect("start command service")
}

pub fn base_url(server: &Server) -> String {
    format!("http://{}", server.addr)
}

/// Rows still waiting in the outbox.
pub async fn outbox_len(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
        .expect("count outbox")
}

/// Whether the outbox is empty, read through its primary key: cheap however
/// many deleted rows the table still holds (a `count(*)` reads every page of
/// them, and a benchmark polling it would load the relay it measures).
pub async fn outbox_empty(pool: &PgPool) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT id FROM outbox ORDER BY id LIMIT 1")
        .fetch_optional(pool)
        .await
        .expect("read outbox")
        .is_none()
}

/// Events in the event store.
pub async fn event_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count events")
}

/// One message read back from the stream.
#[derive(Debug, Clone)]
pub struct StreamedEvent {
    pub stream_sequence: u64,
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub envelope: EventEnvelope,
}

impl StreamedEvent {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_string())
    }
}

/// Every message of the events stream, in stream order.
pub async fn read_stream(nats_url: &str) -> Vec<StreamedEvent> {
    let client = async_nats::connect(nats_url).await.expect("connect nats");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(schemas::subjects::DEFAULT_STREAM)
        .await
        .expect("events stream exists");
    let info = stream.info().await.expect("stream info").clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        let msg = stream.get_raw_message(seq).await.expect("get message");
        out.push(StreamedEvent {
            stream_sequence: msg.sequence,
            subject: msg.subject.to_string(),
            headers: msg.headers.clone(),
            envelope: serde_json::from_slice(&msg.payload).expect("envelope decodes"),
        });
    }
    out
}

/// Asserts the stream holds exactly the store's events: each once, and each
/// aggregate's events in sequence order 1..=n.
pub async fn assert_stream_matches_store(pool: &PgPool, nats_url: &str) -> Vec<StreamedEvent> {
    let events = read_stream(nats_url).await;
    let stored: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence FROM events ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .expect("read events");
    let mut seen: Vec<(String, String, i64)> = events
        .iter()
        .map(|e| {
            (
                e.envelope.aggregate_type.clone(),
                e.envelope.aggregate_id.clone(),
                e.envelope.sequence,
            )
        })
        .collect();
    let mut last: std::collections::HashMap<(String, String), i64> = Default::default();
    for (t, id, seq) in &seen {
        let prev = last.insert((t.clone(), id.clone()), *seq).unwrap_or(0);
        assert_eq!(
            *seq,
            prev + 1,
            "{t}/{id}: sequence {seq} follows {prev} on the stream"
        );
    }
    seen.sort();
    assert_eq!(
        seen.len(),
        stored.len(),
        "stream and store hold as many events"
    );
    assert_eq!(seen, stored, "stream holds exactly the stored events");
    events
}

/// Projectors configuration pointed at the given stores.
pub fn projectors_config(db: &TestDb, nats: &NatsServer) -> projectors::Config {
    let mut c = projectors::Config::local();
    c.database_url = db.url.clone();
    c.nats_url = nats.url();
    c.stream_name = schemas::subjects::DEFAULT_STREAM.into();
    c.batch_size = 100;
    c
}

/// Starts the given projections in process, metrics on a free port.
pub async fn start_projectors(
    config: &projectors::Config,
    projections: Vec<std::sync::Arc<dyn projectors::runtime::Projection>>,
) -> projectors::Projectors {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    projectors::Projectors::start(config, projections, listener)
        .await
        .expect("start projectors")
}

/// Starts the query service in process on a free port.
pub async fn start_query(db: &TestDb, nats: &NatsServer) -> query_service::Server {
    start_query_with(query_config(db, nats)).await
}

/// Query-service configuration pointed at the given stores, with a private
/// Qdrant Edge directory.
pub fn query_config(db: &TestDb, nats: &NatsServer) -> query_service::Config {
    let mut c = query_service::Config::local();
    c.database_url = db.url.clone();
    c.nats_url = nats.url();
    c.search.vector_dir = db.vector_dir();
    c
}

/// Starts a query service with this configuration on a free port.
pub async fn start_query_with(c: query_service::Config) -> query_service::Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    query_service::Server::start(c, listener)
        .await
        .expect("start query service")
}

/// The whole system in process: command service, projectors, query service,
/// over one fresh database and one private NATS server.
pub struct System {
    pub db: TestDb,
    pub nats: NatsServer,
    pub command: Server,
    pub projectors: projectors::Projectors,
    pub query: query_service::Server,
    pub pool: PgPool,
}

impl System {
    /// The whole system with the coordinator off (tests drive tasks by hand).
    pub async fn start() -> Self {
        Self::start_with(config).await
    }

    /// The whole system with the coordinator on (fast clocks).
    pub async fn start_coordinated() -> Self {
        Self::start_with(coordinated_config).await
    }

    async fn start_with(command_config: fn(&TestDb, &NatsServer) -> Config) -> Self {
        let db = TestDb::new().await;
        let nats = NatsServer::start().await;
        let command = start_service(command_config(&db, &nats)).await;
        let projectors = start_projectors(
            &projectors_config(&db, &nats),
            projectors::all_projections(),
        )
        .await;
        let query = start_query(&db, &nats).await;
        let pool = db.pool().await;
        Self {
            db,
            nats,
            command,
            projectors,
            query,
            pool,
        }
    }

    pub fn command_url(&self) -> String {
        format!("http://{}", self.command.addr)
    }

    pub fn query_url(&self) -> String {
        format!("http://{}", self.query.addr)
    }

    /// Waits until the read models have applied everything on the stream.
    pub async fn caught_up(&self) {
        let url = self.nats.url();
        let pool = self.pool.clone();
        wait_until(Duration::from_secs(20), "projections to catch up", || {
            let (url, pool) = (url.clone(), pool.clone());
            async move {
                if outbox_len(&pool).await > 0 {
                    return false;
                }
                let last = stream_last_sequence(&url).await;
                let cp: Option<i64> = sqlx::query_scalar(
                    "SELECT stream_sequence FROM projector_checkpoints WHERE projection = 'read_models'",
                )
                .fetch_optional(&pool)
                .await
                .unwrap_or(None);
                cp.unwrap_or(0) as u64 >= last
            }
        })
        .await;
    }

    pub async fn stop(self) {
        self.query.shutdown().await;
        self.projectors.shutdown().await;
        let _ = self.command.shutdown().await;
    }
}

/// The events stream's last sequence (0 when it does not exist yet).
pub async fn stream_last_sequence(nats_url: &str) -> u64 {
    let Ok(client) = async_nats::connect(nats_url).await else {
        return 0;
    };
    let js = async_nats::jetstream::new(client);
    match js.get_stream(schemas::subjects::DEFAULT_STREAM).await {
        Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Every row of the read models, as JSON, in a stable order: two databases
/// with equal dumps hold equal read models.
pub async fn dump_read_models(pool: &PgPool) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for sql in [
        "SELECT to_jsonb(a) FROM agents a ORDER BY id",
        "SELECT to_jsonb(t) - 'search' FROM tasks t ORDER BY id",
        "SELECT to_jsonb(e) FROM task_events e ORDER BY task_id, sequence",
    ] {
        let rows: Vec<serde_json::Value> = sqlx::query_scalar(sql)
            .fetch_all(pool)
            .await
            .expect("dump read model");
        out.extend(rows);
    }
    out
}

/// Command-service configuration with the coordinator on and fast clocks.
pub fn coordinated_config(db: &TestDb, nats: &NatsServer) -> Config {
    let mut c = config(db, nats);
    c.coordinator_enabled = true;
    c.coordinator_tick_ms = 50;
    c.heartbeat_window_secs = 1;
    c.lease_secs = 5;
    c.retry_base_ms = 200;
    c.retry_max_ms = 2000;
    c
}

/// Agent options for an in-process agent of a [`System`]-like setup.
pub fn agent_options(
    command_url: &str,
    query_url: &str,
    nats: &NatsServer,
    capabilities: &[&str],
    max: u32,
) -> agent_sdk::AgentOptions {
    agent_sdk::AgentOptions {
        command_url: command_url.to_string(),
        query_url: query_url.to_string(),
        nats_url: nats.url(),
        agent_id: None,
        name: format!("agent-{}", capabilities.join("-")),
        agent_type: "test".into(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        max_concurrent_tasks: max,
        config: serde_json::json!({}),
        heartbeat_every: Duration::from_millis(200),
        poll_every: Duration::from_secs(1),
        api_token: None,
    }
}
