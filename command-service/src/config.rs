//! Command-service configuration: flags with environment fallbacks and
//! defaults that run against a local Postgres and NATS.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "command-service",
    version,
    about = "SutazAI command API, event store and outbox relay"
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "COMMAND_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Postgres holding the event store and the outbox.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/sutazai"
    )]
    pub database_url: String,

    /// Largest number of pooled Postgres connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Run the event-store migrations at start.
    #[arg(long, env = "RUN_MIGRATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub run_migrations: bool,

    /// NATS server with JetStream.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// JetStream stream that carries every event.
    #[arg(long, env = "SUTAZAI_STREAM", default_value = schemas::subjects::DEFAULT_STREAM)]
    pub stream_name: String,

    /// JetStream de-duplication window in seconds: a re-publish of the same
    /// event within it is dropped. Must exceed the longest relay failover.
    #[arg(long, env = "STREAM_DUPLICATE_WINDOW_SECS", default_value_t = 300)]
    pub stream_duplicate_window_secs: u64,

    /// Oldest event the stream keeps, in seconds; 0 keeps everything.
    #[arg(long, env = "STREAM_MAX_AGE_SECS", default_value_t = 0)]
    pub stream_max_age_secs: u64,

    /// Largest stream size in bytes; -1 is unlimited.
    #[arg(long, env = "STREAM_MAX_BYTES", default_value_t = -1, allow_hyphen_values = true)]
    pub stream_max_bytes: i64,

    /// Run the outbox relay in this process (one instance is active at a time).
    #[arg(long, env = "RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_enabled: bool,

    /// Outbox rows the relay reads per batch.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 1000)]
    pub relay_batch_size: u32,

    /// How often the relay polls when no notification arrives, in ms.
    #[arg(long, env = "RELAY_POLL_MS", default_value_t = 500)]
    pub relay_poll_ms: u64,

    /// How often a standby relay tries to take the lead, in ms.
    #[arg(long, env = "RELAY_STANDBY_POLL_MS", default_value_t = 1000)]
    pub relay_standby_poll_ms: u64,

    /// Run the coordinator in this process (one instance is active at a time).
    #[arg(long, env = "COORDINATOR_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub coordinator_enabled: bool,

    /// How often the coordinator checks its deadlines, in ms.
    #[arg(long, env = "COORDINATOR_TICK_MS", default_value_t = 200)]
    pub coordinator_tick_ms: u64,

    /// An active agent without a heartbeat for this long is marked unhealthy.
    #[arg(long, env = "HEARTBEAT_WINDOW_SECS", default_value_t = 15)]
    pub heartbeat_window_secs: u64,

    /// Seconds an agent has to start a task assigned to it.
    #[arg(long, env = "LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,

    /// First retry delay in ms; doubles per attempt (±20 % jitter).
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,

    /// Longest retry delay in ms.
    #[arg(long, env = "RETRY_MAX_MS", default_value_t = 60_000)]
    pub retry_max_ms: u64,

    /// Take a snapshot of an aggregate every this many events.
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 50)]
    pub snapshot_every: usize,

    /// Longest time a request may take, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Requests in flight before new ones are shed with 503 `overloaded`
    /// (Retry-After: 1); bounds memory under overload.
    #[arg(long, env = "COMMAND_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// API tokens as `actor=token` pairs separated by commas. When set, every
    /// command needs `Authorization: Bearer <token>` and is recorded under
    /// that actor; when unset, the actor is taken from `X-Actor` (or
    /// `anonymous`) and the service warns at start.
    #[arg(long, env = "SUTAZAI_API_TOKENS", hide_env_values = true)]
    pub api_tokens: Option<String>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Config {
    /// The defaults, as if no flag or variable were given (for tests).
    pub fn local() -> Self {
        Self::parse_from(["command-service"])
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}
