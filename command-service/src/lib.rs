//! The SutazAI command service: the command HTTP API, the Postgres event store
//! (postgres-es) with its transactional outbox, and the relay that carries
//! every committed event to NATS JetStream.
//!
//! Layout:
//! - [`config`]: the clap configuration.
//! - [`http`]: routes, extractors, problem answers, OpenAPI, health.
//! - [`store`]: running a command against the event store.
//! - [`coordinator`]: the process manager that dispatches, times out and retries.
//! - [`liveness`]: agent heartbeats.
//! - [`error`]: [`error::ApiError`], mapped once to problem+json.
//! - [`relay`]: the outbox relay; [`stream`]: the JetStream stream.
//!
//! [`Server::start`] runs the whole service on a given listener so that tests
//! start the real thing in process.
#![forbid(unsafe_code)]

pub mod commit;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod http;
pub mod liveness;
pub mod relay;
pub mod store;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
use http::context::Tokens;
use http::{AppState, Limits, Shared};
use relay::{OutboxSignal, Relay, RelaySettings, RelayStatus};
use store::EventStores;
use stream::StreamSettings;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot reach Postgres at start: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
}

/// How long the relay may keep flushing the outbox after the HTTP server stopped.
const RELAY_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// The event-store migrations (embedded).
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("./migrations");
    // Other components (projectors) keep their own migrations in the same database.
    m.set_ignore_missing(true);
    m
}

/// A running command service.
pub struct Server {
    pub addr: SocketAddr,
    pub relay: Arc<RelayStatus>,
    pub coordinator: Arc<coordinator::CoordinatorStatus>,
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    /// Connects to Postgres and NATS, migrates, and serves on `listener`.
    /// NATS need not be up: commands are accepted and the relay catches up.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Self, ServeError> {
        let tokens = Tokens::parse(config.api_tokens.as_deref()).map_err(ServeError::Config)?;
        if !tokens.enabled() {
            tracing::warn!("SUTAZAI_API_TOKENS is not set: commands are not authenticated and the actor is taken from X-Actor");
        }
        let (shutdown, mut stop) = watch::channel(false);
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // No ping on every acquire (a round trip; postgres-es acquires
            // up to three times per command): a broken connection fails its
            // query instead, and the pool drops it.
            .test_before_acquire(false)
            .connect(&config.database_url)
            .await?;
        if config.run_migrations {
            migrator().run(&pool).await?;
        }
        let nats = async_nats::ConnectOptions::new()
            .name("sutazai-command-service")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| ServeError::Nats(e.to_string()))?;
        let relay_status = Arc::new(RelayStatus::default());
        let coordinator_status = Arc::new(coordinator::CoordinatorStatus::default());
        let outbox_signal = Arc::new(OutboxSignal::default());
        let stores = Arc::new(EventStores::new(
            pool.clone(),
            config.snapshot_every,
            outbox_signal.clone(),
        ));
        let peer_notifier = relay::notify_peers(
            pool.clone(),
            outbox_signal.clone(),
            relay_status.clone(),
            stop.clone(),
        );
        // The coordinator's own few connections: its queries scan views that
        // grow while it runs (see `service_kit::index_scans`), and its ticks
        // do not wait behind commands for a connection.
        let coordinator_pool = if config.coordinator_enabled {
            Some(
                PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(service_kit::index_scans((*pool.connect_options()).clone()))
                    .await?,
            )
        } else {
            None
        };
        let coordinator = coordinator_pool.map(|coordinator_pool| {
            coordinator::Coordinator::new(
                coordinator_pool,
                stores.clone(),
                nats.clone(),
                coordinator::CoordinatorSettings {
                    stream: config.stream_name.clone(),
                    tick: Duration::from_millis(config.coordinator_tick_ms.max(10)),
                    heartbeat_window: Duration::from_secs(config.heartbeat_window_secs.max(1)),
                    lease: Duration::from_secs(config.lease_secs.max(1)),
                    retry_base: Duration::from_millis(config.retry_base_ms),
                    retry_max: Duration::from_millis(config.retry_max_ms.max(config.retry_base_ms)),
                    standby_poll: Duration::from_millis(config.relay_standby_poll_ms.max(10)),
                },
                coordinator_status.clone(),
            )
        });
        let heartbeats = liveness::listen(pool.clone(), nats.clone(), stop.clone());
        let state = AppState::new(Shared {
            heartbeat_window_secs: config.heartbeat_window_secs,
            stores,
            tokens,
            pool: pool.clone(),
            nats: nats.clone(),
            relay: relay_status.clone(),
            relay_enabled: config.relay_enabled,
        });
        let limits = Limits {
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout(),
            max_in_flight: config.max_in_flight,
        };
        let app = http::router(state, limits);
        let addr = listener.local_addr()?;
        let relay = config.relay_enabled.then(|| {
            Relay::new(
                pool,
                async_nats::jetstream::new(nats),
                RelaySettings {
                    stream: StreamSettings::from_config(&config),
                    batch_size: i64::from(config.relay_batch_size.max(1)),
                    poll: Duration::from_millis(config.relay_poll_ms.max(10)),
                    standby_poll: Duration::from_millis(config.relay_standby_poll_ms.max(10)),
                },
                relay_status.clone(),
                outbox_signal,
            )
        });
        let handle = tokio::spawn(async move {
            // Owned here so that aborting this task (a crash in tests) aborts both.
            let (relay_stop_tx, relay_stop_rx) = watch::channel(false);
            let coordinator_stop_rx = relay_stop_rx.clone();
            let mut relay_task = relay.map(|r| tokio::spawn(r.run(relay_stop_rx)));
            let _abort_relay = AbortOnDrop(relay_task.as_ref().map(|t| t.abort_handle()));
            let coordinator_task = coordinator.map(|c| tokio::spawn(c.run(coordinator_stop_rx)));
            let _abort_coordinator =
                AbortOnDrop(coordinator_task.as_ref().map(|t| t.abort_handle()));
            let heartbeat_task = tokio::spawn(heartbeats);
            let _abort_notifier = AbortOnDrop(Some(tokio::spawn(peer_notifier).abort_handle()));
            let _abort_heartbeats = AbortOnDrop(Some(heartbeat_task.abort_handle()));
            let serve = axum::serve(listener, service_kit::per_connection(app))
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                });
            let served = serve.await;
            // In-flight commands have finished; now let the relay flush.
            let _ = relay_stop_tx.send(true);
            if let Some(task) = relay_task.as_mut() {
                if tokio::time::timeout(RELAY_FLUSH_LIMIT, task).await.is_err() {
                    tracing::warn!("relay did not flush within {RELAY_FLUSH_LIMIT:?}; the outbox keeps the rest");
                }
            }
            served.map_err(ServeError::from)
        });
        tracing::info!(%addr, "command service listening");
        Ok(Self {
            addr,
            relay: relay_status,
            coordinator: coordinator_status,
            shutdown,
            handle,
        })
    }

    /// Graceful stop: in-flight requests finish, the relay flushes.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        match self.handle.await {
            Ok(result) => result,
            Err(e) => Err(ServeError::Io(std::io::Error::other(e))),
        }
    }

    /// Hard stop, as if the process died: nothing is flushed, connections drop.
    pub async fn abort(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Runs the service until SIGTERM or Ctrl-C, then stops gracefully.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.bind).await?;
    let server = Server::start(config, listener).await?;
    service_kit::shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight commands and flushing the outbox");
    server.shutdown().await
}
