//! Semantic search: the vector projection, its stores and the embedder.
//!
//! - [`embed`]: the [`embed::Embedder`] trait, the deterministic default and
//!   the HTTP embedder.
//! - [`vectors`]: the [`vectors::VectorStore`] trait and its types.
//! - [`edge`]: Qdrant Edge in process (default); [`qdrant`]: a Qdrant server.
//! - [`VectorProjection`]: events → points, guarded by the aggregate sequence.
//!
//! Where it runs: a Qdrant Edge shard is a library inside one process, and
//! the process that searches it must own it, so with the default store the
//! query service runs this projection itself (see `query-service`). With a
//! Qdrant server (`QDRANT_URL`) the `projectors` process runs it and the
//! query service only searches.

pub mod edge;
pub mod embed;
pub mod qdrant;
pub mod vectors;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use schemas::state::{AgentState, TaskState};
use schemas::{AgentEvent, TaskEvent};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::decode::{DomainEvent, ProjectedEvent};
use crate::runtime::{Applied, ApplyError, Projection};
use embed::{Embedder, HashEmbedder, HttpEmbedder, HttpFlavour};
use vectors::{Collection, Point, Sparse, Stored, VectorError, VectorStore};

/// Name of the vector projection (consumer, checkpoint, dead letters).
pub const PROJECTION: &str = "vectors";

/// Vector store and embedder settings, shared by `projectors` and `query-service`.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchSettings {
    /// Qdrant server (gRPC, e.g. http://127.0.0.1:6334). Unset: Qdrant Edge in
    /// process under `--vector-dir`.
    #[arg(long, env = "QDRANT_URL", global = true)]
    pub qdrant_url: Option<String>,

    #[arg(long, env = "QDRANT_API_KEY", global = true, hide_env_values = true)]
    pub qdrant_api_key: Option<String>,

    /// Collection names are `<prefix>_tasks` and `<prefix>_agents`.
    #[arg(
        long,
        env = "QDRANT_COLLECTION_PREFIX",
        default_value = "sutazai",
        global = true
    )]
    pub qdrant_collection_prefix: String,

    /// Directory of the Qdrant Edge shards.
    #[arg(
        long,
        env = "VECTOR_DIR",
        default_value = "data/vectors",
        global = true
    )]
    pub vector_dir: PathBuf,

    /// `hash` (built in, deterministic), `ollama` or `openai`.
    #[arg(long, env = "EMBEDDER", default_value = "hash", value_parser = ["hash", "ollama", "openai"], global = true)]
    pub embedder: String,

    /// Base URL of the embeddings endpoint (ollama / openai).
    #[arg(long, env = "EMBEDDER_URL", global = true)]
    pub embedder_url: Option<String>,

    #[arg(
        long,
        env = "EMBEDDER_MODEL",
        default_value = "nomic-embed-text",
        global = true
    )]
    pub embedder_model: String,

    #[arg(long, env = "EMBEDDER_API_KEY", global = true, hide_env_values = true)]
    pub embedder_api_key: Option<String>,

    /// Dense dimension. Must match the model for ollama/openai.
    #[arg(long, env = "EMBEDDING_DIM", default_value_t = 384, global = true)]
    pub embedding_dim: usize,

    /// Timeout of one call to Qdrant or the embedder, in ms.
    #[arg(long, env = "SEARCH_TIMEOUT_MS", default_value_t = 5000, global = true)]
    pub search_timeout_ms: u64,

    /// Least time between two batches of the vector projection, in ms
    /// ([`crate::runtime::Projection::linger`]); 0 applies every event at once.
    #[arg(long, env = "SEARCH_LINGER_MS", default_value_t = crate::runtime::DEFAULT_LINGER_MS, global = true)]
    pub search_linger_ms: u64,
}

impl SearchSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.search_timeout_ms.max(1))
    }

    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.search_linger_ms)
    }

    pub fn embedder(&self) -> Result<Arc<dyn Embedder>, String> {
        if !(8..=8192).contains(&self.embedding_dim) {
            return Err(format!(
                "EMBEDDING_DIM must be between 8 and 8192, not {}",
                self.embedding_dim
            ));
        }
        let flavour = match self.embedder.as_str() {
            "hash" => return Ok(Arc::new(HashEmbedder::new(self.embedding_dim))),
            "ollama" => HttpFlavour::Ollama,
            "openai" => HttpFlavour::OpenAi,
            other => return Err(format!("unknown embedder {other:?}")),
        };
        let url = self
            .embedder_url
            .as_deref()
            .ok_or("EMBEDDER_URL is required for the ollama and openai embedders")?;
        HttpEmbedder::new(
            flavour,
            url,
            &self.embedder_model,
            self.embedder_api_key.clone(),
            self.embedding_dim,
            self.timeout(),
        )
        .map(|e| Arc::new(e) as Arc<dyn Embedder>)
        .map_err(|e| e.to_string())
    }

    /// Opens the configured store.
    pub async fn open_store(&self) -> Result<Arc<dyn VectorStore>, VectorError> {
        match &self.qdrant_url {
            Some(url) => Ok(Arc::new(
                qdrant::QdrantVectors::connect(
                    url,
                    self.qdrant_api_key.clone(),
                    &self.qdrant_collection_prefix,
                    self.embedding_dim,
                    self.timeout(),
                )
                .await?,
            )),
            None => {
                let dir = self.vector_dir.clone();
                let dim = self.embedding_dim;
                let store = tokio::task::spawn_blocking(move || edge::EdgeVectors::open(&dir, dim))
                    .await
                    .map_err(|e| VectorError::Store(e.to_string()))??;
                Ok(Arc::new(store))
            }
        }
    }

    /// Whether the vector projection runs in the query service (Edge) rather
    /// than in `projectors` (a Qdrant server).
    pub fn embedded(&self) -> bool {
        self.qdrant_url.is_none()
    }
}

/// What search needs: the store, the embedder and the BM25 model.
#[derive(Clone)]
pub struct Search {
    pub store: Arc<dyn VectorStore>,
    pub embedder: Arc<dyn Embedder>,
    bm25: Arc<EdgeBm25>,
}

impl Search {
    pub fn new(store: Arc<dyn VectorStore>, embedder: Arc<dyn Embedder>) -> Result<Self, String> {
        if store.dimension() != embedder.dimension() {
            return Err(format!(
                "the vector store has dimension {} but the embedder {} gives {}: rebuild the \
                 vector projection into an empty store",
                store.dimension(),
                embedder.name(),
                embedder.dimension()
            ));
        }
        let bm25 = EdgeBm25::new(EdgeBm25Config::default()).map_err(|e| e.to_string())?;
        Ok(Self {
            store,
            embedder,
            bm25: Arc::new(bm25),
        })
    }

    pub async fn open(settings: &SearchSettings) -> Result<Self, String> {
        let embedder = settings.embedder()?;
        let store = settings.open_store().await.map_err(|e| e.to_string())?;
        Self::new(store, embedder)
    }

    pub fn sparse_document(&self, text: &str) -> Sparse {
        let v = self.bm25.embed_document(text);
        Sparse {
            indices: v.indices,
            values: v.values,
        }
    }

    pub fn sparse_query(&self, text: &str) -> Sparse {
        let v = self.bm25.embed_query(text);
        Sparse {
            indices: v.indices,
            values: v.values,
        }
    }

    pub async fn embed_one(&self, text: &str) -> Result<Vec<f32>, String> {
        let mut v = self
            .embedder
            .embed(&[text.to_string()])
            .await
            .map_err(|e| e.to_string())?;
        v.pop()
            .ok_or_else(|| "the embedder returned nothing".into())
    }
}

/// Strings found in a JSON value (keys of objects included), depth first,
/// up to `max` characters.
pub fn json_text(value: &Value, max: usize) -> String {
    fn walk(v: &Value, out: &mut String, max: usize) {
        if out.len() >= max {
            return;
        }
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push(' ');
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out, max)),
            Value::Object(map) => map.iter().for_each(|(k, v)| {
                if !k.starts_with('_') && !matches!(v, Value::String(s) if s.starts_with("http")) {
                    out.push_str(&k.replace('_', " "));
                    out.push(' ');
                }
                walk(v, out, max)
            }),
            Value::Number(n) => {
                out.push_str(&n.to_string());
                out.push(' ');
            }
            Value::Bool(_) | Value::Null => {}
        }
    }
    let mut out = String::new();
    walk(value, &mut out, max);
    let mut s: String = out.chars().take(max).collect();
    s.truncate(s.trim_end().len());
    s
}

/// The text embedded for a task: its type, input, output summary and error.
pub fn task_text(state: &TaskState) -> String {
    let mut parts = vec![state.task_type.replace(['.', '_', '-'], " ")];
    parts.push(json_text(&state.input, 2000));
    if let Some(output) = &state.output {
        parts.push(json_text(output, 1000));
    }
    if let Some(error) = &state.error {
        parts.push(error.clone());
    }
    parts.retain(|p| !p.is_empty());
    parts.join(". ")
}

/// The text embedded for an agent: name, type, capabilities and the
/// `description` of its config.
pub fn agent_text(state: &AgentState) -> String {
    let mut parts = vec![
        state.name.clone(),
        state.agent_type.replace(['.', '_', '-'], " "),
        state
            .capabilities
            .iter()
            .map(|c| c.replace(['.', '_', '-'], " "))
            .collect::<Vec<_>>()
            .join(", "),
    ];
    if let Some(d) = state.config.get("description").and_then(Value::as_str) {
        parts.push(d.to_string());
    }
    parts.retain(|p| !p.is_empty());
    parts.join(". ")
}

fn payload_time(payload: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    payload
        .get(key)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The vector projection: one point per task and per agent.
pub struct VectorProjection {
    search: Search,
    linger: Duration,
}

impl VectorProjection {
    /// Applies every event as soon as it arrives (see [`Self::lingering`]).
    pub fn new(search: Search) -> Self {
        Self {
            search,
            linger: Duration::ZERO,
        }
    }

    /// Starts batches at most every `linger`.
    pub fn lingering(self, linger: Duration) -> Self {
        Self { linger, ..self }
    }
}

/// One point as a batch sees it: read from the store once, changed by each
/// of the batch's events in turn, written once at the end.
struct Slot {
    /// The point's payload as of the events folded so far (`None`: no point).
    payload: Option<Map<String, Value>>,
    /// The text the stored vectors were embedded from (`None`: no vectors).
    embedded: Option<String>,
    /// The text for the vectors, once an event changed the point.
    text: Option<String>,
}

impl Slot {
    fn read(stored: Option<Stored>) -> Self {
        match stored {
            None => Self {
                payload: None,
                embedded: None,
                text: None,
            },
            Some(stored) => Self {
                // Without a stored vector the text must be embedded again.
                embedded: stored
                    .dense
                    .and(stored.payload.get("text"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                payload: Some(stored.payload),
                text: None,
            },
        }
    }

    /// The aggregate's state before `event`: `None` when the event was
    /// already applied. A gap, or a later event without a point, is refused.
    fn prior<S: serde::de::DeserializeOwned + Default>(
        &self,
        event: &ProjectedEvent,
        is_creation: bool,
    ) -> Result<Option<Prior<S>>, ApplyError> {
        let sequence = event.envelope.sequence;
        let Some(payload) = &self.payload else {
            if !is_creation {
                return Err(ApplyError::Rejected(format!(
                    "no point for {} {} before event {sequence}",
                    event.envelope.aggregate_type, event.envelope.aggregate_id
                )));
            }
            return Ok(Some(Prior {
                state: S::default(),
                created_at: event.envelope.occurred_at,
            }));
        };
        let last = payload.get("seq").and_then(Value::as_i64).unwrap_or(0);
        if sequence <= last {
            return Ok(None);
        }
        if sequence != last + 1 && !(is_creation && last == 0) {
            return Err(ApplyError::Rejected(format!(
                "event {sequence} of {} {} arrived but the point is at {last}",
                event.envelope.aggregate_type, event.envelope.aggregate_id
            )));
        }
        let state = serde_json::from_value(payload.get("state").cloned().unwrap_or(Value::Null))
            .map_err(|e| ApplyError::Rejected(format!("stored point has a bad state: {e}")))?;
        Ok(Some(Prior {
            state,
            created_at: payload_time(payload, "created_at").unwrap_or(event.envelope.occurred_at),
        }))
    }

    /// Applies `event` to the point (`id`), in memory.
    fn fold(&mut self, id: Uuid, event: &ProjectedEvent) -> Result<Applied, ApplyError> {
        let at = event.envelope.occurred_at;
        let sequence = event.envelope.sequence;
        let (text, mut payload) = match &event.event {
            DomainEvent::Task(e) => {
                let creation = matches!(e, TaskEvent::TaskSubmitted(_));
                let Some(Prior {
                    mut state,
                    created_at,
                }) = self.prior::<TaskState>(event, creation)?
                else {
                    return Ok(Applied::Skipped);
                };
                state.apply(sequence, e);
                let text = task_text(&state);
                let status = state.status.map(|s| s.as_str()).unwrap_or("submitted");
                let mut payload = json!({
                    "kind": "task",
                    "id": id.to_string(),
                    "seq": sequence,
                    "status": status,
                    "task_type": state.task_type,
                    "priority": state.priority,
                    "created_at": created_at.to_rfc3339(),
                    "created_at_ms": vectors::millis(created_at),
                    "updated_at": at.to_rfc3339(),
                });
                let map = payload
                    .as_object_mut()
                    .ok_or_else(|| ApplyError::Rejected("payload".into()))?;
                if let Some(agent) = state.agent_id {
                    map.insert("agent_id".into(), agent.to_string().into());
                }
                if let Some(parent) = state.parent_task_id {
                    map.insert("parent_task_id".into(), parent.to_string().into());
                }
                map.insert(
                    "state".into(),
                    serde_json::to_value(&state)
                        .map_err(|e| ApplyError::Rejected(e.to_string()))?,
                );
                (text, std::mem::take(map))
            }
            DomainEvent::Agent(e) => {
                let creation = matches!(e, AgentEvent::AgentCreated(_));
                let Some(Prior {
                    mut state,
                    created_at,
                }) = self.prior::<AgentState>(event, creation)?
                else {
                    return Ok(Applied::Skipped);
                };
                state.apply(sequence, e);
                let text = agent_text(&state);
                let status = state.status.map(|s| s.as_str()).unwrap_or("inactive");
                let payload = json!({
                    "kind": "agent",
                    "id": id.to_string(),
                    "seq": sequence,
                    "status": status,
                    "retired": status == "retired",
                    "name": state.name,
                    "agent_type": state.agent_type,
                    "capabilities": state.capabilities,
                    "created_at": created_at.to_rfc3339(),
                    "updated_at": at.to_rfc3339(),
                    "state": serde_json::to_value(&state).map_err(|e| ApplyError::Rejected(e.to_string()))?,
                });
                let Value::Object(payload) = payload else {
                    return Err(ApplyError::Rejected("payload".into()));
                };
                (text, payload)
            }
        };
        payload.insert("text".into(), Value::String(text.clone()));
        self.payload = Some(payload);
        self.text = Some(text);
        Ok(Applied::Applied)
    }
}

/// A point's folded state and creation time before an event.
struct Prior<S> {
    state: S,
    created_at: DateTime<Utc>,
}

fn collection_of(event: &ProjectedEvent) -> Collection {
    match event.event {
        DomainEvent::Task(_) => Collection::Tasks,
        DomainEvent::Agent(_) => Collection::Agents,
    }
}

fn aggregate_uuid(event: &ProjectedEvent) -> Result<Uuid, ApplyError> {
    Uuid::parse_str(&event.envelope.aggregate_id)
        .map_err(|_| ApplyError::Rejected("aggregate id is not a UUID".into()))
}

#[async_trait::async_trait]
impl Projection for VectorProjection {
    fn name(&self) -> &str {
        PROJECTION
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &ProjectedEvent,
    ) -> Result<Applied, ApplyError> {
        let mut applied = self.apply_batch(conn, std::slice::from_ref(event)).await?;
        applied
            .pop()
            .ok_or_else(|| ApplyError::Rejected("no result for the event".into()))
    }

    /// Reads each point the batch touches once, folds the batch's events
    /// into it in order, and writes each changed point once: a task
    /// submitted and queued in one batch is one read and one upsert, its
    /// text embedded once. Nothing is written before every event has folded,
    /// so an event refused here leaves the store as it was; a write that
    /// fails part-way leaves points whose stored sequence makes the event by
    /// event retry skip them.
    async fn apply_batch(
        &self,
        _conn: &mut PgConnection,
        events: &[ProjectedEvent],
    ) -> Result<Vec<Applied>, ApplyError> {
        // The points the batch touches, each once, in order of first event.
        let mut keys = Vec::with_capacity(events.len());
        let mut index: HashMap<(Collection, Uuid), usize> = HashMap::new();
        let mut slot_of = Vec::with_capacity(events.len());
        for event in events {
            let key = (collection_of(event), aggregate_uuid(event)?);
            let next = keys.len();
            let i = *index.entry(key).or_insert(next);
            if i == next {
                keys.push(key);
            }
            slot_of.push(i);
        }
        let mut read: HashMap<(Collection, Uuid), Option<Stored>> = HashMap::new();
        for collection in Collection::ALL {
            let ids: Vec<Uuid> = keys
                .iter()
                .filter(|k| k.0 == collection)
                .map(|k| k.1)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let stored = self
                .search
                .store
                .get_many(collection, &ids)
                .await
                .map_err(store)?;
            if stored.len() != ids.len() {
                return Err(ApplyError::Rejected(format!(
                    "the vector store returned {} points for {} ids",
                    stored.len(),
                    ids.len()
                )));
            }
            read.extend(ids.into_iter().map(|id| (collection, id)).zip(stored));
        }
        let mut slots: Vec<Slot> = keys
            .iter()
            .map(|k| Slot::read(read.remove(k).flatten()))
            .collect();
        let mut applied = Vec::with_capacity(events.len());
        for (event, i) in events.iter().zip(slot_of) {
            applied.push(slots[i].fold(keys[i].1, event)?);
        }
        for collection in Collection::ALL {
            // Points whose text changed get fresh vectors, embedded in one
            // call; the others a payload-only overwrite.
            let (mut fresh, mut payloads) = (Vec::new(), Vec::new());
            for (key, slot) in keys.iter().zip(slots.iter_mut()) {
                if key.0 != collection {
                    continue;
                }
                let (Some(text), Some(payload)) = (slot.text.take(), slot.payload.take()) else {
                    continue;
                };
                if slot.embedded.as_deref() == Some(text.as_str()) {
                    payloads.push((key.1, payload));
                } else {
                    fresh.push((key.1, text, payload));
                }
            }
            if fresh.is_empty() && payloads.is_empty() {
                continue;
            }
            let texts: Vec<String> = fresh.iter().map(|(_, text, _)| text.clone()).collect();
            let dense = self
                .search
                .embedder
                .embed(&texts)
                .await
                .map_err(|e| ApplyError::Rejected(e.to_string()))?;
            if dense.len() != fresh.len() {
                return Err(ApplyError::Rejected(format!(
                    "the embedder returned {} vectors for {} texts",
                    dense.len(),
                    fresh.len()
                )));
            }
            let points = fresh
                .into_iter()
                .zip(dense)
                .map(|((id, text, payload), dense)| Point {
                    id,
                    dense,
                    sparse: self.search.sparse_document(&text),
                    payload,
                })
                .collect();
            self.search
                .store
                .write_many(collection, points, payloads)
                .await
                .map_err(store)?;
        }
        Ok(applied)
    }

    async fn flush(&self) -> Result<(), ApplyError> {
        self.search.store.flush().await.map_err(store)
    }

    /// Qdrant Edge's flush syncs every mapped file of a shard (125 `msync`s
    /// a second in the query service at 500 commands/s when each batch
    /// flushed). Every write is guarded by the point's stored sequence, so
    /// events re-applied after a restart are skipped.
    fn flush_every(&self) -> Option<Duration> {
        Some(FLUSH_EVERY)
    }

    fn linger(&self) -> Duration {
        self.linger
    }
}

/// The longest the vector store's flush, and so the projection's checkpoint,
/// lags the points written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

fn store(e: VectorError) -> ApplyError {
    ApplyError::Rejected(e.to_string())
}
