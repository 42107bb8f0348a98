//! The vector store and the graph the search and graph endpoints read.
//!
//! A configured store that cannot be reached at start is retried in the
//! background; until then (and whenever a call fails to reach it) its
//! endpoints answer 503 and `/health/ready` reports it down — never a hang:
//! every call is bounded by `SEARCH_TIMEOUT_MS`.

use std::sync::Arc;
use std::time::Duration;

use projectors::graph::{neo4j::Neo4jGraph, pg::PgGraph, GraphSettings, GraphStore};
use projectors::search::{Search, SearchSettings};
use sqlx::PgPool;
use tokio::sync::RwLock;

use crate::error::ApiError;

/// A store that may not be connected yet.
pub struct Slot<T: ?Sized> {
    inner: RwLock<Result<Arc<T>, String>>,
}

impl<T: ?Sized> Slot<T> {
    fn new(initial: Result<Arc<T>, String>) -> Arc<Self> {
        Arc::new(Self {
            inner: RwLock::new(initial),
        })
    }

    pub async fn get(&self, what: &str) -> Result<Arc<T>, ApiError> {
        match &*self.inner.read().await {
            Ok(v) => Ok(v.clone()),
            Err(e) => Err(ApiError::Unavailable(format!("{what} unavailable: {e}"))),
        }
    }

    pub async fn status(&self) -> Result<Arc<T>, String> {
        self.inner.read().await.clone()
    }
}

#[derive(Clone)]
pub struct Stores {
    pub search: Arc<Slot<Search>>,
    pub graph: Arc<Slot<dyn GraphStore>>,
    pub timeout: Duration,
    /// Whether a Qdrant server / Neo4j is configured (they show in readiness).
    pub remote_vectors: bool,
    pub remote_graph: bool,
}

impl Stores {
    /// Opens what it can now; remote stores that fail are retried every 5 s.
    /// A local store that fails (a bad Qdrant Edge directory, a dimension
    /// that does not match the embedder) is a start error.
    pub async fn open(
        search: &SearchSettings,
        graph: &GraphSettings,
        pool: PgPool,
    ) -> Result<Self, String> {
        let timeout = search.timeout();
        let search_slot = if search.embedded() {
            Slot::new(Ok(Arc::new(Search::open(search).await?)))
        } else {
            let first = tokio::time::timeout(timeout, Search::open(search))
                .await
                .unwrap_or_else(|_| Err("timed out connecting to Qdrant".into()))
                .map(Arc::new);
            let slot = Slot::new(first);
            retry_in_background(slot.clone(), {
                let settings = search.clone();
                move || {
                    let settings = settings.clone();
                    async move { Search::open(&settings).await.map(Arc::new) }
                }
            });
            slot
        };
        let graph_slot: Arc<Slot<dyn GraphStore>> = match &graph.neo4j_url {
            None => Slot::new(Ok(Arc::new(PgGraph::new(pool)) as Arc<dyn GraphStore>)),
            Some(_) => {
                let connect = {
                    let g = graph.clone();
                    move || {
                        let g = g.clone();
                        async move {
                            Neo4jGraph::connect(
                                g.neo4j_url.as_deref().unwrap_or_default(),
                                &g.neo4j_user,
                                g.neo4j_password.as_deref().unwrap_or_default(),
                            )
                            .await
                            .map(|n| Arc::new(n) as Arc<dyn GraphStore>)
                            .map_err(|e| e.to_string())
                        }
                    }
                };
                let first = tokio::time::timeout(timeout, connect())
                    .await
                    .unwrap_or_else(|_| Err("timed out connecting to Neo4j".into()));
                let slot = Slot::new(first);
                retry_in_background(slot.clone(), connect);
                slot
            }
        };
        Ok(Self {
            search: search_slot,
            graph: graph_slot,
            timeout,
            remote_vectors: !search.embedded(),
            remote_graph: graph.neo4j_url.is_some(),
        })
    }

    /// Runs a store call within the timeout; a timeout is a 503.
    pub async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, ApiError> {
        tokio::time::timeout(self.timeout, call).await.map_err(|_| {
            ApiError::Unavailable(format!("{what} did not answer within {:?}", self.timeout))
        })
    }
}

fn retry_in_background<T, F, Fut>(slot: Arc<Slot<T>>, connect: F)
where
    T: ?Sized + Send + Sync + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Arc<T>, String>> + Send,
{
    tokio::spawn(async move {
        loop {
            if slot.inner.read().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            match connect().await {
                Ok(store) => {
                    *slot.inner.write().await = Ok(store);
                    tracing::info!("store connected");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store still unreachable; retrying in 5 s");
                    *slot.inner.write().await = Err(e);
                }
            }
        }
    });
}
