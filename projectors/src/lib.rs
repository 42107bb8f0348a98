//! SutazAI projectors: durable JetStream consumers that build the read models
//! from the event stream, with dead letters and metrics.
//!
//! Layout:
//! - [`runtime`]: the [`runtime::Projection`] trait every projection plugs
//!   into, and the consumer loop (batches, checkpoints, parking).
//! - [`decode`]: message → typed event (with upcasting), or why not.
//! - [`dead_letters`]: park, list, re-drive, discard.
//! - [`read_models`]: the Postgres read models (`agents`, `tasks`, `task_events`).
//! - [`http`]: `/metrics`, `/health`, `/health/ready`.
//! - [`audit`]: history, state as of a version or time, trace, export, hash-chain verification.
//! - [`config`]: flags and subcommands.
//!
//! [`Projectors::start`] runs the chosen projections in process, so tests run
//! the real thing.
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod dead_letters;
pub mod decode;
pub mod graph;
pub mod http;
pub mod read_models;
pub mod rebuild;
pub mod runtime;
pub mod search;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::Config;
use runtime::{Projection, ProjectionStatus, RuntimeSettings};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("unknown projection {0:?} (known: {1})")]
    UnknownProjection(String, String),
    #[error("Postgres: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("HTTP: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Store(String),
}

/// The read-model migrations (embedded); they share the database with the
/// event store's, each ignoring the other's.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("./migrations");
    m.set_ignore_missing(true);
    m
}

/// The Postgres projections: read models and the Postgres graph.
pub fn all_projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(read_models::ReadModels),
        Arc::new(graph::GraphProjection::postgres()),
    ]
}

/// The projections this process runs with `config`: the read models, the
/// graph (Neo4j when `NEO4J_URL` is set) and, with a Qdrant server, the
/// vector projection (with Qdrant Edge the query service runs it).
pub async fn configured_projections(
    config: &Config,
) -> Result<Vec<Arc<dyn Projection>>, StartError> {
    let mut all: Vec<Arc<dyn Projection>> = vec![Arc::new(read_models::ReadModels)];
    match &config.graph.neo4j_url {
        Some(url) => {
            let neo = graph::neo4j::Neo4jGraph::connect(
                url,
                &config.graph.neo4j_user,
                config.graph.neo4j_password.as_deref().unwrap_or_default(),
            )
            .await
            .map_err(|e| StartError::Store(e.to_string()))?;
            all.push(Arc::new(
                graph::GraphProjection::neo4j(Arc::new(neo)).lingering(config.graph.linger()),
            ));
        }
        None => all.push(Arc::new(
            graph::GraphProjection::postgres().lingering(config.graph.linger()),
        )),
    }
    if !config.search.embedded() {
        let search = search::Search::open(&config.search)
            .await
            .map_err(StartError::Store)?;
        all.push(Arc::new(
            search::VectorProjection::new(search).lingering(config.search.linger()),
        ));
    }
    Ok(all)
}

/// The projections named in `only` (all when empty).
pub async fn select(
    config: &Config,
    only: &[String],
) -> Result<Vec<Arc<dyn Projection>>, StartError> {
    if only.iter().any(|o| o == search::PROJECTION) && config.search.embedded() {
        return Err(StartError::Store(
            "the vectors projection runs in the query service while Qdrant Edge is the store \
             (set QDRANT_URL to run it here)"
                .into(),
        ));
    }
    let all = configured_projections(config).await?;
    if only.is_empty() {
        return Ok(all);
    }
    let known = all
        .iter()
        .map(|p| p.name().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    only.iter()
        .map(|name| {
            all.iter()
                .find(|p| p.name() == name)
                .cloned()
                .ok_or_else(|| StartError::UnknownProjection(name.clone(), known.clone()))
        })
        .collect()
}

pub async fn connect_pool(config: &Config) -> Result<PgPool, StartError> {
    let options: PgConnectOptions = config.database_url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        // No ping round trip before every batch: a broken connection fails
        // the batch, which is retried from its checkpoint.
        .test_before_acquire(false)
        .connect_with(service_kit::generic_plans(service_kit::index_scans(
            options,
        )))
        .await?;
    if config.run_migrations {
        migrator().run(&pool).await?;
    }
    Ok(pool)
}

/// Running projections and their metrics endpoint.
pub struct Projectors {
    pub addr: SocketAddr,
    pub statuses: Vec<(String, Arc<ProjectionStatus>)>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Projectors {
    pub async fn start(
        config: &Config,
        projections: Vec<Arc<dyn Projection>>,
        listener: TcpListener,
    ) -> Result<Self, StartError> {
        let pool = connect_pool(config).await?;
        let nats = async_nats::ConnectOptions::new()
            .name("sutazai-projectors")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| StartError::Nats(e.to_string()))?;
        let js = async_nats::jetstream::new(nats.clone());
        let settings = RuntimeSettings {
            stream: config.stream_name.clone(),
            consumer_prefix: config.consumer_prefix.clone(),
            batch_size: config.batch_size.max(1),
            max_attempts: config.max_attempts.max(1),
            ..RuntimeSettings::default()
        };
        let (shutdown, stop) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut statuses = Vec::new();
        for projection in projections {
            let status = Arc::new(ProjectionStatus::default());
            statuses.push((projection.name().to_string(), status.clone()));
            tasks.spawn(runtime::run(
                pool.clone(),
                js.clone(),
                projection,
                settings.clone(),
                status,
                stop.clone(),
            ));
        }
        let addr = listener.local_addr()?;
        let app = http::router(http::MetricsState {
            pool,
            nats,
            stream: config.stream_name.clone(),
            projections: statuses.clone(),
        });
        let mut stop_http = stop.clone();
        tasks.spawn(async move {
            let _ = axum::serve(listener, service_kit::per_connection(app))
                .with_graceful_shutdown(async move {
                    let _ = stop_http.wait_for(|s| *s).await;
                })
                .await;
        });
        tracing::info!(%addr, "projectors running; metrics at /metrics");
        Ok(Self {
            addr,
            statuses,
            shutdown,
            tasks,
        })
    }

    /// Stops after the batch in flight.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops at once, as if the process died mid-batch.
    pub async fn abort(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}
