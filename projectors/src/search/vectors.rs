//! The vector store: one trait, two implementations — Qdrant Edge in process
//! (the default, [`super::edge`]) and a Qdrant server ([`super::qdrant`]).
//!
//! Two collections, `tasks` and `agents`. Every point has a dense vector
//! (`dense`, cosine, from the [`super::embed::Embedder`]) and a BM25 sparse
//! vector (`bm25`, IDF-weighted by the store), and a payload with the
//! filterable fields plus `seq` (the aggregate sequence it reflects) and
//! `state` (the folded aggregate), which the projection needs to apply the
//! next event. Point id = aggregate id.

use serde_json::{Map, Value};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("vector store unavailable: {0}")]
    Unavailable(String),
    #[error("vector store: {0}")]
    Store(String),
    #[error(
        "vector of dimension {got} for a collection of dimension {expected}: \
         the embedder changed; rebuild the vector projection"
    )]
    Dimension { expected: usize, got: usize },
    #[error("bad search request: {0}")]
    BadRequest(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    Tasks,
    Agents,
}

impl Collection {
    pub const ALL: [Collection; 2] = [Collection::Tasks, Collection::Agents];

    pub fn name(self) -> &'static str {
        match self {
            Collection::Tasks => "tasks",
            Collection::Agents => "agents",
        }
    }

    /// Payload fields that get an index, with their kind.
    pub fn indexed_fields(self) -> &'static [(&'static str, FieldKind)] {
        match self {
            Collection::Tasks => &[
                ("status", FieldKind::Keyword),
                ("task_type", FieldKind::Keyword),
                ("agent_id", FieldKind::Keyword),
                ("parent_task_id", FieldKind::Keyword),
                ("priority", FieldKind::IntegerMatch),
                ("created_at_ms", FieldKind::IntegerRange),
            ],
            Collection::Agents => &[
                ("status", FieldKind::Keyword),
                ("agent_type", FieldKind::Keyword),
                ("capabilities", FieldKind::Keyword),
            ],
        }
    }
}

/// How a payload field is filtered, and so which index it gets.
///
/// An integer field is indexed only for the filter the search API puts on
/// it: a Qdrant integer index by default keeps both a lookup map (value →
/// points, for `match`) and a range index, each held in memory per point
/// in the shard's appendable segment. `priority` is only matched and
/// `created_at_ms` (unique per task, so one map entry per task) only ranged.
/// Measured on 2026-11-28 (`loadgen --parts commands,visibility`, the query
/// service's peak RSS): see the README's Performance section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Keyword,
    /// Filtered by equality only.
    IntegerMatch,
    /// Filtered by range only.
    IntegerRange,
}

impl FieldKind {
    /// For an integer field: (lookup index, range index).
    pub fn integer_indexes(self) -> Option<(bool, bool)> {
        match self {
            FieldKind::Keyword => None,
            FieldKind::IntegerMatch => Some((true, false)),
            FieldKind::IntegerRange => Some((false, true)),
        }
    }
}

pub const DENSE: &str = "dense";
pub const SPARSE: &str = "bm25";

/// A sparse vector: sorted unique indices and their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sparse {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct Point {
    pub id: Uuid,
    pub dense: Vec<f32>,
    pub sparse: Sparse,
    pub payload: Map<String, Value>,
}

/// A stored point as the projection reads it back.
#[derive(Debug, Clone)]
pub struct Stored {
    pub payload: Map<String, Value>,
    pub dense: Option<Vec<f32>>,
}

/// Conditions that all must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub keyword: Vec<(String, String)>,
    pub not_keyword: Vec<(String, String)>,
    pub integer: Vec<(String, i64)>,
    /// `field >= from` and `field < to` (either may be absent).
    pub range: Vec<(String, Option<i64>, Option<i64>)>,
    /// Leave out this point (e.g. "similar to X" without X).
    pub exclude_id: Option<Uuid>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Dense vectors only.
    Semantic,
    /// Dense and BM25, fused by reciprocal rank.
    Hybrid,
    /// BM25 only.
    Text,
}

#[derive(Debug, Clone)]
pub struct Query {
    pub mode: Mode,
    pub dense: Vec<f32>,
    pub sparse: Sparse,
    pub filter: Filter,
    pub limit: usize,
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub id: Uuid,
    pub score: f32,
    pub payload: Map<String, Value>,
}

#[async_trait::async_trait]
pub trait VectorStore: Send + Sync {
    /// `edge` or `qdrant`.
    fn backend(&self) -> &'static str;
    /// Dense dimension of the collections.
    fn dimension(&self) -> usize;
    /// Whether the store was empty when opened (so a projection checkpoint
    /// kept elsewhere must start over).
    fn created_empty(&self) -> bool;
    async fn get(&self, collection: Collection, id: Uuid) -> Result<Option<Stored>, VectorError>;
    async fn upsert(&self, collection: Collection, point: Point) -> Result<(), VectorError>;
    /// Replaces a point's payload, keeping its vectors (a much smaller write
    /// than an upsert when the text did not change).
    async fn overwrite_payload(
        &self,
        collection: Collection,
        id: Uuid,
        payload: Map<String, Value>,
    ) -> Result<(), VectorError>;
    async fn delete(&self, collection: Collection, id: Uuid) -> Result<(), VectorError>;
    /// The points `ids`, in order (`None` where there is none). The default
    /// reads them one by one; a store that can read many at once does.
    async fn get_many(
        &self,
        collection: Collection,
        ids: &[Uuid],
    ) -> Result<Vec<Option<Stored>>, VectorError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get(collection, *id).await?);
        }
        Ok(out)
    }
    /// Upserts `points` and overwrites the payloads of `payloads`. The
    /// default writes them one by one; a store that can write many at once
    /// does.
    async fn write_many(
        &self,
        collection: Collection,
        points: Vec<Point>,
        payloads: Vec<(Uuid, Map<String, Value>)>,
    ) -> Result<(), VectorError> {
        for point in points {
            self.upsert(collection, point).await?;
        }
        for (id, payload) in payloads {
            self.overwrite_payload(collection, id, payload).await?;
        }
        Ok(())
    }
    async fn search(&self, collection: Collection, query: Query) -> Result<Vec<Hit>, VectorError>;
    async fn count(&self, collection: Collection) -> Result<u64, VectorError>;
    /// Makes every write so far durable.
    async fn flush(&self) -> Result<(), VectorError>;
    /// Cheap reachability check for readiness.
    async fn ping(&self) -> Result<(), VectorError>;
}

/// Refuses a vector that does not fit the collection.
pub fn check_dimension(expected: usize, vector: &[f32]) -> Result<(), VectorError> {
    if vector.len() != expected {
        return Err(VectorError::Dimension {
            expected,
            got: vector.len(),
        });
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(VectorError::BadRequest(
            "vector holds NaN or infinity".into(),
        ));
    }
    Ok(())
}

/// Milliseconds since the epoch, for range filters on timestamps.
pub fn millis(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}
