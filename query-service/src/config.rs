//! Query-service configuration.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "query-service",
    version,
    about = "SutazAI read-only query API and live updates"
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "QUERY_BIND", default_value = "127.0.0.1:8081")]
    pub bind: SocketAddr,

    /// Postgres holding the read models (connections are read only).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/sutazai"
    )]
    pub database_url: String,

    /// Largest number of pooled Postgres connections.
    #[arg(long, env = "QUERY_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Statements reading tasks by id that may be in flight at once; reads
    /// that arrive meanwhile are batched into the next one. One lane makes
    /// the largest batches: `loadgen --parts queries` on 2 cores, alternated,
    /// GET at 16 clients 0.80, 0.76, 0.69× the raw SELECT with 1 lane against
    /// 0.65, 0.71, 0.67, 0.67× with 2 and 0.53, 0.57× with 4.
    #[arg(long, env = "QUERY_READ_LANES", default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=64))]
    pub read_lanes: u32,

    /// NATS server with JetStream, for live updates.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// JetStream stream that carries every event.
    #[arg(long, env = "SUTAZAI_STREAM", default_value = schemas::subjects::DEFAULT_STREAM)]
    pub stream_name: String,

    /// Longest a read with `min_version` waits for the projection, in ms.
    #[arg(long, env = "MIN_VERSION_WAIT_MS", default_value_t = 2000)]
    pub min_version_wait_ms: u64,

    /// Longest time a request may take, in seconds (live streams excepted).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Durable consumer prefix of the vector projection this service runs
    /// with Qdrant Edge.
    #[arg(long, env = "QUERY_CONSUMER_PREFIX", default_value = "query")]
    pub vector_consumer_prefix: String,

    /// Events per vector-projection batch.
    #[arg(long, env = "VECTOR_BATCH_SIZE", default_value_t = 200)]
    pub vector_batch_size: usize,

    #[command(flatten)]
    pub search: projectors::search::SearchSettings,

    #[command(flatten)]
    pub graph: projectors::graph::GraphSettings,

    /// Requests in flight (live streams not counted) before new ones are
    /// shed with 503 `overloaded` (Retry-After: 1); bounds memory under overload.
    #[arg(long, env = "QUERY_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,

    /// Reads parked waiting for their `min_version` that no longer count
    /// toward `QUERY_MAX_IN_FLIGHT` (a parked read holds a few KiB and does
    /// no work); past this many, a waiting read keeps its in-flight slot.
    #[arg(long, env = "QUERY_MAX_PARKED_READS", default_value_t = 1024)]
    pub max_parked_reads: usize,

    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Config {
    /// The defaults, as if no flag or variable were given (for tests).
    pub fn local() -> Self {
        Self::parse_from(["query-service"])
    }

    pub fn min_version_wait(&self) -> Duration {
        Duration::from_millis(self.min_version_wait_ms)
    }
}
