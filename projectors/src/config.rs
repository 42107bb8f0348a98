//! Projectors configuration and subcommands.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "projectors",
    version,
    about = "SutazAI projections: build read models from the event stream"
)]
pub struct Config {
    /// Postgres holding the read models (the same database as the event store by default).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/sutazai",
        global = true
    )]
    pub database_url: String,

    /// NATS server with JetStream.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,

    /// JetStream stream that carries every event.
    #[arg(long, env = "SUTAZAI_STREAM", default_value = schemas::subjects::DEFAULT_STREAM, global = true)]
    pub stream_name: String,

    /// Prefix of the durable JetStream consumer names (one per projection).
    #[arg(
        long,
        env = "PROJECTOR_CONSUMER_PREFIX",
        default_value = "projector",
        global = true
    )]
    pub consumer_prefix: String,

    /// Address of the `/metrics`, `/health` and `/health/ready` endpoints.
    #[arg(
        long,
        env = "PROJECTORS_BIND",
        default_value = "127.0.0.1:8082",
        global = true
    )]
    pub bind: SocketAddr,

    /// Events applied per transaction.
    #[arg(
        long,
        env = "PROJECTOR_BATCH_SIZE",
        default_value_t = 500,
        global = true
    )]
    pub batch_size: usize,

    /// Tries of a failing event before it is parked as a dead letter.
    #[arg(
        long,
        env = "PROJECTOR_MAX_ATTEMPTS",
        default_value_t = 3,
        global = true
    )]
    pub max_attempts: u32,

    /// Run the read-model migrations at start.
    #[arg(long, env = "RUN_MIGRATIONS", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub run_migrations: bool,

    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,

    #[command(flatten)]
    pub search: crate::search::SearchSettings,

    #[command(flatten)]
    pub graph: crate::graph::GraphSettings,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the projections (the default).
    Run {
        /// Run only these projections (comma separated); all by default.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// List parked events.
    DeadLetters {
        /// Include re-driven and discarded ones.
        #[arg(long)]
        all: bool,
        /// Only this projection.
        #[arg(long)]
        projection: Option<String>,
    },
    /// Apply a projection's parked events in order (after a fix).
    Redrive {
        #[arg(long, default_value = crate::read_models::NAME)]
        projection: String,
        /// Only this aggregate.
        #[arg(long)]
        aggregate_id: Option<String>,
    },
    /// Give up on one parked event, recording why.
    Discard {
        #[arg(long)]
        id: i64,
        #[arg(long)]
        reason: String,
    },
    /// Every event of one aggregate, from the event store of record; with
    /// `--as-of` also its state at that version or time.
    History {
        /// `task` or `agent`.
        #[arg(long, default_value = "task")]
        aggregate_type: String,
        #[arg(long)]
        id: String,
        /// A version number or an RFC 3339 time.
        #[arg(long)]
        as_of: Option<crate::audit::AsOf>,
        /// JSON output for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Every event, in every aggregate, that one request caused.
    Trace {
        #[arg(long)]
        correlation_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Events as JSON Lines, for an external audit.
    Export {
        #[arg(long)]
        aggregate_type: Option<String>,
        #[arg(long)]
        aggregate_id: Option<String>,
        #[arg(long)]
        event_type: Option<String>,
        /// From this time (RFC 3339), inclusive.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Until this time (RFC 3339), exclusive.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Rebuild a projection from the stream into a fresh copy while the live
    /// one serves, then swap it in atomically.
    Rebuild {
        #[arg(long, default_value = crate::read_models::NAME)]
        projection: String,
        /// Events per transaction in each lane of the copy (a rebuild is a
        /// bulk load: larger batches than the live `--batch-size`).
        #[arg(long, default_value_t = crate::rebuild::DEFAULT_BATCH)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild into a scratch copy and compare it with the live projection
    /// row by row; exits 1 when they differ.
    Verify {
        #[arg(long, default_value = crate::read_models::NAME)]
        projection: String,
        /// Events per transaction in each lane of the copy (a rebuild is a
        /// bulk load: larger batches than the live `--batch-size`).
        #[arg(long, default_value_t = crate::rebuild::DEFAULT_BATCH)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// Walk the event store and report the first broken link of each
    /// aggregate's hash chain; exits 1 when one is broken.
    VerifyChain {
        #[arg(long)]
        json: bool,
    },
}

impl Config {
    /// The defaults, as if no flag or variable were given (for tests).
    pub fn local() -> Self {
        Self::parse_from(["projectors"])
    }
}
