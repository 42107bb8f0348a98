//! The SutazAI query service: a read-only HTTP API over the projections
//! (read models), with OpenAPI docs and live updates over SSE and WebSocket.
//! It never writes: its database sessions are read only, and it never touches
//! the event store.
//!
//! Layout:
//! - [`config`]: the clap configuration.
//! - [`http`]: routes, extractors, OpenAPI, live streams, health.
//! - [`db`]: parameterised SQL over the read models.
//! - [`reads`]: concurrent reads of one task, coalesced into one statement.
//! - [`error`]: [`error::ApiError`], mapped once to problem+json.
#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod reads;
pub mod stores;
pub mod visibility;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot reach Postgres at start: {0}")]
    Database(#[from] sqlx::Error),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
    #[error("search/graph store: {0}")]
    Store(String),
}

/// A running query service.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<Result<(), std::io::Error>>,
    /// The vector projection, when this process owns a Qdrant Edge store.
    projection: Option<JoinHandle<()>>,
    pub vector_status: Option<Arc<projectors::runtime::ProjectionStatus>>,
}

impl Server {
    pub async fn start(config: Config, listener: TcpListener) -> Result<Self, ServeError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // No ping before every query (a round trip that cost a GET a
            // quarter of its CPU): a broken connection fails its query and
            // the pool drops it.
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // The query side never writes.
                    conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                        .await?;
                    Ok(())
                })
            })
            .connect(&config.database_url)
            .await?;
        let nats = async_nats::ConnectOptions::new()
            .name("sutazai-query-service")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| ServeError::Nats(e.to_string()))?;
        let stores = stores::Stores::open(&config.search, &config.graph, pool.clone())
            .await
            .map_err(ServeError::Store)?;
        let (shutdown, mut stop) = watch::channel(false);
        let (projection, vector_status) = if config.search.embedded() {
            let search = stores.search.status().await.map_err(ServeError::Store)?;
            let (handle, status) =
                start_vector_projection(&config, search, nats.clone(), stop.clone()).await?;
            (Some(handle), Some(status))
        } else {
            (None, None)
        };
        let commits = listen_for_commits(pool.clone(), stop.clone());
        let state = http::AppState::new(http::Shared {
            visibility: visibility::Visibility::start(
                pool.clone(),
                commits,
                config.max_parked_reads,
            ),
            reads: reads::TaskReads::start((*pool.connect_options()).clone(), config.read_lanes),
            stopping: stop.clone(),
            stores,
            pool,
            nats,
            stream: config.stream_name.clone(),
            min_version_wait: config.min_version_wait(),
        });
        let app = http::router(
            state,
            Duration::from_secs(config.request_timeout_secs),
            config.max_in_flight,
        );
        let addr = listener.local_addr()?;
        let handle = tokio::spawn(async move {
            axum::serve(listener, service_kit::per_connection(app))
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(%addr, "query service listening");
        Ok(Self {
            addr,
            shutdown,
            handle,
            projection,
            vector_status,
        })
    }

    /// Graceful stop: live streams end, in-flight requests finish (for at
    /// most 10 s).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(Duration::from_secs(10), &mut self.handle)
            .await
            .is_err()
        {
            tracing::warn!("connections still open after 10 s; closing them");
            self.handle.abort();
        }
        if let Some(mut p) = self.projection.take() {
            if tokio::time::timeout(Duration::from_secs(10), &mut p)
                .await
                .is_err()
            {
                p.abort();
            }
        }
    }

    /// Stops at once, as if the process died.
    pub async fn abort(mut self) {
        self.handle.abort();
        if let Some(p) = self.projection.take() {
            p.abort();
            let _ = p.await;
        }
        let _ = self.shutdown.send(true);
    }
}

/// Follows the projectors' commit notifications; the receiver ticks once per
/// committed batch of the read-model projection (the others' commits change
/// nothing a `min_version` read looks at). Reconnects after a lost connection (waiters fall back to
/// polling meanwhile).
fn listen_for_commits(pool: sqlx::PgPool, mut stop: watch::Receiver<bool>) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut n = 0u64;
        while !*stop.borrow() {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for projector commits; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener
                .listen(projectors::runtime::CHECKPOINT_CHANNEL)
                .await
            {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            loop {
                tokio::select! {
                    got = listener.recv() => match got {
                        Ok(notification) => {
                            // The payload is `<projection>:<checkpoint>`.
                            let read_models = notification
                                .payload()
                                .split_once(':')
                                .is_some_and(|(p, _)| p == projectors::read_models::NAME);
                            if read_models {
                                n += 1;
                                let _ = tx.send(n);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "projector commit notifications lost; reconnecting");
                            break;
                        }
                    },
                    _ = stop.changed() => return,
                }
            }
        }
    });
    rx
}

/// With Qdrant Edge, this process owns the vector store, so it runs the
/// vector projection (the `projectors` runtime: durable consumer, checkpoint
/// and dead letters in Postgres through a small writable pool). A store
/// created empty starts over from the beginning of the stream.
async fn start_vector_projection(
    config: &Config,
    search: Arc<projectors::search::Search>,
    nats: async_nats::Client,
    stop: watch::Receiver<bool>,
) -> Result<(JoinHandle<()>, Arc<projectors::runtime::ProjectionStatus>), ServeError> {
    let writer = PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&config.database_url)
        .await?;
    if search.store.created_empty() {
        // Nothing is indexed: a checkpoint left from an earlier store is void.
        let reset = sqlx::query("DELETE FROM projector_checkpoints WHERE projection = $1")
            .bind(projectors::search::PROJECTION)
            .execute(&writer)
            .await;
        if let Err(e) = reset {
            tracing::debug!(error = %e, "no checkpoint to reset (tables not created yet?)");
        }
    }
    let settings = projectors::runtime::RuntimeSettings {
        stream: config.stream_name.clone(),
        consumer_prefix: config.vector_consumer_prefix.clone(),
        batch_size: config.vector_batch_size.max(1),
        ..Default::default()
    };
    let status = Arc::new(projectors::runtime::ProjectionStatus::default());
    let projection = Arc::new(
        projectors::search::VectorProjection::new((*search).clone())
            .lingering(config.search.linger()),
    );
    let js = async_nats::jetstream::new(nats);
    let handle = tokio::spawn(projectors::runtime::run(
        writer,
        js,
        projection,
        settings,
        status.clone(),
        stop,
    ));
    tracing::info!(dir = %config.search.vector_dir.display(), "vector projection running on Qdrant Edge");
    Ok((handle, status))
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.bind).await?;
    let server = Server::start(config, listener).await?;
    service_kit::shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}
