//! The SutazAI query service: a read-only HTTP API over the projections
//! (read models), with OpenAPI docs and live updates over SSE and WebSocket.
//! It never writes: its database sessions are read only, and it never touches
//! the event store.
//!
//! Layout:
//! - [`config`]: the clap configuration.
//! - [`http`]: routes, extractors, OpenAPI, live streams, health.
//! - [`db`]: parameterised SQL over the read models.
//! - [`error`]: [`error::ApiError`], mapped once to problem+json.
#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod error;
pub mod http;

use std::net::SocketAddr;
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
}

/// A running query service.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<Result<(), std::io::Error>>,
}

impl Server {
    pub async fn start(config: Config, listener: TcpListener) -> Result<Self, ServeError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
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
        let (shutdown, mut stop) = watch::channel(false);
        let state = http::AppState {
            stopping: stop.clone(),
            pool,
            nats,
            stream: config.stream_name.clone(),
            min_version_wait: config.min_version_wait(),
        };
        let app = http::router(state, Duration::from_secs(config.request_timeout_secs));
        let addr = listener.local_addr()?;
        let handle = tokio::spawn(async move {
            axum::serve(listener, app)
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
    }
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.bind).await?;
    let server = Server::start(config, listener).await?;
    service_kit::shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}
