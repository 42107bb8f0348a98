//! Qdrant Edge in process: one shard per collection under the data
//! directory. The default vector store — nothing else to run.
//!
//! A shard has one owner: the process that opens it. Its calls are
//! synchronous, so they run on the blocking pool; writes are serialised by a
//! mutex (Edge's own flush must not race an update).
//!
//! The WAL: qdrant-edge 0.7.2 appends every update to a memory-mapped WAL
//! that it never truncates and never reads back (a shard loads from its
//! flushed segments only; read in its source). Left alone, the WAL grows on
//! disk without end and its written pages stay in the process's RSS. So the
//! WAL is written in small segments, and after a flush that leaves more than
//! [`WAL_CLOSED_SEGMENTS`] closed ones the shard is closed, every closed
//! segment but the newest removed, and the shard opened again (see
//! [`EdgeVectors::recycle`]) — what the WAL's own truncation would do, which
//! Edge does not call. The newest closed segment stays because the WAL
//! numbers updates from its segments' start indexes, and a segment ignores an
//! update numbered below the version of the point it changes: a WAL emptied
//! altogether would number from zero again, and later updates of existing
//! points would be dropped. Nothing is lost: the flush made the segments
//! durable, and our own durability is the projection's checkpoint, stored
//! only after that flush.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qdrant_edge::{
    Condition, Distance, EdgeConfig, EdgeConfigBuilder, EdgeShard, EdgeSparseVectorParamsBuilder,
    EdgeVectorParamsBuilder, FieldCondition, Fusion, IntegerIndexParams, Match, Modifier,
    NamedQuery, PayloadFieldSchema, PayloadSchemaParams, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, Prefetch, QueryEnum, QueryRequest, Range, ScoringQuery,
    UpdateOperation, ValueVariants, VectorInternal, VectorStructInternal, WithPayloadInterface,
    WithVector,
};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

use super::vectors::{
    check_dimension, Collection, Filter, Hit, Mode, Point, Query, Sparse, Stored, VectorError,
    VectorStore, DENSE, SPARSE,
};

/// The WAL's segment size (Edge's default is 32 MiB).
pub const WAL_SEGMENT_BYTES: usize = 2 << 20;

/// Closed WAL segments past which a shard is reopened after a flush, at
/// least.
pub const WAL_CLOSED_SEGMENTS: usize = 3;

/// WAL bytes per point the shard holds that may pile up before a reopen: a
/// reopen reads the shard's in-memory indexes back (about 150 ms at 50,000
/// points here), so it waits for a WAL in proportion — its cost stays a
/// fixed share of the updates' however large the shard grows.
const WAL_BYTES_PER_POINT: usize = 128;

fn wal_options(segment_capacity: usize) -> qdrant_edge::WalOptions {
    qdrant_edge::WalOptions {
        segment_capacity,
        ..Default::default()
    }
}

/// How long a reopen waits for calls still using the old shard.
const RECYCLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A shard that can be closed and opened again; `None` while a reopen failed
/// (the next call opens it).
type Slot = RwLock<Option<Arc<EdgeShard>>>;

pub struct EdgeVectors {
    root: PathBuf,
    dimension: usize,
    shards: HashMap<Collection, Slot>,
    /// WAL segment size of the shards this store creates or reopens.
    wal_segment: usize,
    created_empty: bool,
    write: Mutex<()>,
}

fn store_err(e: impl std::fmt::Display) -> VectorError {
    VectorError::Store(e.to_string())
}

fn config(dimension: usize, wal_segment: usize) -> EdgeConfig {
    EdgeConfigBuilder::new()
        .vector(
            DENSE,
            // Half-precision storage: half the memory of the dense vectors,
            // which dominate the shard; cosine ranking is unaffected at this
            // precision for normalised vectors. On disk (memory-mapped, not
            // read into memory at open): a search reads them through the page
            // cache, and the process holds only the pages in use.
            EdgeVectorParamsBuilder::new(dimension, Distance::Cosine)
                .datatype(qdrant_edge::VectorStorageDatatype::Float16)
                .on_disk(true)
                .build(),
        )
        .sparse_vector(
            SPARSE,
            EdgeSparseVectorParamsBuilder::new()
                .modifier(Modifier::Idf)
                .build(),
        )
        .wal_options(wal_options(wal_segment))
        .build()
}

impl EdgeVectors {
    /// Opens (or creates) the shards under `root`. Refuses a store whose
    /// dense dimension differs from `dimension`: the embedder changed, and
    /// the projection must be rebuilt into an empty directory.
    pub fn open(root: &Path, dimension: usize) -> Result<Self, VectorError> {
        Self::open_with_wal_segment(root, dimension, WAL_SEGMENT_BYTES)
    }

    /// [`Self::open`] with another WAL segment size (tests use tiny ones).
    pub fn open_with_wal_segment(
        root: &Path,
        dimension: usize,
        wal_segment: usize,
    ) -> Result<Self, VectorError> {
        std::fs::create_dir_all(root).map_err(store_err)?;
        let mut shards = HashMap::new();
        let mut created_empty = true;
        for collection in Collection::ALL {
            let path = root.join(collection.name());
            let exists = path.join("edge_config.json").exists();
            let shard = if exists {
                created_empty = false;
                let shard = EdgeShard::load(&path, None).map_err(store_err)?;
                let stored = shard
                    .config()
                    .vectors
                    .get(DENSE)
                    .map(|v| v.size)
                    .unwrap_or(0);
                if stored != dimension {
                    return Err(VectorError::Dimension {
                        expected: stored,
                        got: dimension,
                    });
                }
                shard
            } else {
                std::fs::create_dir_all(&path).map_err(store_err)?;
                let shard =
                    EdgeShard::new(&path, config(dimension, wal_segment)).map_err(store_err)?;
                for (field, kind) in collection.indexed_fields() {
                    let schema = match kind.integer_indexes() {
                        None => PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword),
                        Some((lookup, range)) => PayloadFieldSchema::FieldParams(
                            PayloadSchemaParams::Integer(IntegerIndexParams {
                                lookup: Some(lookup),
                                range: Some(range),
                                ..Default::default()
                            }),
                        ),
                    };
                    shard
                        .update(UpdateOperation::FieldIndexOperation(
                            qdrant_edge::FieldIndexOperations::CreateIndex(
                                qdrant_edge::CreateIndex {
                                    field_name: json_path(field)?,
                                    field_schema: Some(schema),
                                },
                            ),
                        ))
                        .map_err(store_err)?;
                }
                shard
            };
            shards.insert(collection, RwLock::new(Some(Arc::new(shard))));
        }
        Ok(Self {
            root: root.to_path_buf(),
            dimension,
            shards,
            wal_segment,
            created_empty,
            write: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn shard(&self, collection: Collection) -> Result<Arc<EdgeShard>, VectorError> {
        let slot = self
            .shards
            .get(&collection)
            .ok_or_else(|| store_err("collection not open"))?;
        if let Some(shard) = slot.read().await.as_ref() {
            return Ok(shard.clone());
        }
        // A reopen failed: open it now (or fail this call as it did).
        let mut closed = slot.write().await;
        if let Some(shard) = closed.as_ref() {
            return Ok(shard.clone());
        }
        let path = self.root.join(collection.name());
        let shard =
            Arc::new(blocking(move || EdgeShard::load(&path, None).map_err(store_err)).await?);
        *closed = Some(shard.clone());
        Ok(shard)
    }

    /// Points in the collection, counted exactly or estimated.
    async fn points(&self, collection: Collection, exact: bool) -> Result<usize, VectorError> {
        let shard = self.shard(collection).await?;
        blocking(move || {
            shard
                .count(qdrant_edge::CountRequest {
                    filter: None,
                    exact,
                })
                .map_err(store_err)
        })
        .await
    }

    /// Closes the shard, removes every closed WAL segment but the newest and
    /// opens the shard again, if more than `max_closed` closed segments have
    /// piled up and they hold more than [`WAL_BYTES_PER_POINT`] per point.
    /// Call only right after a flush, with writes held off. Calls in flight
    /// finish on the old shard first (new ones wait); if they take longer
    /// than [`RECYCLE_WAIT`] the reopen is left for the next flush.
    pub async fn recycle(
        &self,
        collection: Collection,
        max_closed: usize,
    ) -> Result<bool, VectorError> {
        let path = self.root.join(collection.name());
        let wal = path.join("wal");
        let closed = blocking({
            let wal = wal.clone();
            move || closed_segments(&wal)
        })
        .await?;
        if closed.len() <= max_closed {
            return Ok(false);
        }
        let points = self.points(collection, false).await?;
        if closed.len() * self.wal_segment <= points * WAL_BYTES_PER_POINT {
            return Ok(false);
        }
        let Some(slot) = self.shards.get(&collection) else {
            return Ok(false);
        };
        let mut open = slot.write().await;
        let Some(mut shard) = open.take() else {
            return Ok(false);
        };
        let deadline = tokio::time::Instant::now() + RECYCLE_WAIT;
        let owned = loop {
            match Arc::try_unwrap(shard) {
                Ok(owned) => break owned,
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    shard = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(shared) => {
                    *open = Some(shared);
                    return Ok(false);
                }
            }
        };
        let started = std::time::Instant::now();
        let removed = closed.len() - 1;
        let segment = self.wal_segment;
        let reopened = blocking(move || {
            let mut config = owned.config().clone();
            config.wal_options = Some(wal_options(segment));
            // Dropping flushes (nothing is pending) and unmaps.
            drop(owned);
            // Oldest first; the newest stays.
            for (_, file) in &closed[..closed.len() - 1] {
                std::fs::remove_file(file).map_err(store_err)?;
            }
            EdgeShard::load(&path, Some(config)).map_err(store_err)
        })
        .await?;
        *open = Some(Arc::new(reopened));
        tracing::debug!(
            collection = collection.name(),
            removed,
            ms = started.elapsed().as_millis() as u64,
            "Qdrant Edge shard reopened with its WAL truncated"
        );
        Ok(true)
    }
}

/// The WAL's closed segments (`closed-<first entry>`), oldest first.
fn closed_segments(wal: &Path) -> Result<Vec<(u64, PathBuf)>, VectorError> {
    let mut closed: Vec<(u64, PathBuf)> = std::fs::read_dir(wal)
        .map_err(store_err)?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let start = name.to_str()?.strip_prefix("closed-")?.parse().ok()?;
            Some((start, entry.path()))
        })
        .collect();
    closed.sort();
    Ok(closed)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VectorError> + Send + 'static,
) -> Result<T, VectorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VectorError::Store(format!("edge call panicked or was cancelled: {e}")))?
}

/// Replaces the payload of the point `id`.
fn overwrite(id: Uuid, payload: Map<String, Value>) -> UpdateOperation {
    UpdateOperation::PayloadOperation(qdrant_edge::PayloadOps::OverwritePayload(
        qdrant_edge::SetPayloadOp {
            payload: qdrant_edge::Payload(payload),
            points: Some(vec![PointId::Uuid(id)]),
            filter: None,
            key: None,
        },
    ))
}

fn uuid_of(id: &PointId) -> Option<Uuid> {
    match id {
        PointId::Uuid(u) => Some(*u),
        PointId::NumId(_) => None,
    }
}

fn json_path(field: &str) -> Result<qdrant_edge::JsonPath, VectorError> {
    field
        .parse()
        .map_err(|_| VectorError::BadRequest(format!("bad payload field {field:?}")))
}

fn to_filter(filter: &Filter) -> Result<Option<qdrant_edge::Filter>, VectorError> {
    if filter.is_empty() {
        return Ok(None);
    }
    let key = json_path;
    let mut must = Vec::new();
    for (field, value) in &filter.keyword {
        must.push(Condition::Field(FieldCondition::new_match(
            key(field)?,
            Match::new_value(ValueVariants::String(value.clone())),
        )));
    }
    for (field, value) in &filter.integer {
        must.push(Condition::Field(FieldCondition::new_match(
            key(field)?,
            Match::new_value(ValueVariants::Integer(*value)),
        )));
    }
    for (field, from, to) in &filter.range {
        let f = |v: &Option<i64>| {
            v.map(|x| qdrant_edge::external::ordered_float::OrderedFloat(x as f64))
        };
        must.push(Condition::Field(FieldCondition::new_range(
            key(field)?,
            Range {
                gte: f(from),
                lt: f(to),
                gt: None,
                lte: None,
            },
        )));
    }
    let mut must_not = Vec::new();
    for (field, value) in &filter.not_keyword {
        must_not.push(Condition::Field(FieldCondition::new_match(
            key(field)?,
            Match::new_value(ValueVariants::String(value.clone())),
        )));
    }
    if let Some(id) = filter.exclude_id {
        must_not.push(Condition::HasId(
            std::iter::once(PointId::Uuid(id)).collect(),
        ));
    }
    let mut out = qdrant_edge::Filter::new();
    out.must = (!must.is_empty()).then_some(must);
    out.must_not = (!must_not.is_empty()).then_some(must_not);
    Ok(Some(out))
}

fn sparse_query(s: &Sparse) -> Result<VectorInternal, VectorError> {
    qdrant_edge::Vector::new_sparse(s.indices.clone(), s.values.clone())
        .map(|v| v.0)
        .map_err(|e| VectorError::BadRequest(e.to_string()))
}

fn nearest(vector: VectorInternal, using: &str) -> ScoringQuery {
    ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(vector, using)))
}

#[async_trait::async_trait]
impl VectorStore for EdgeVectors {
    fn backend(&self) -> &'static str {
        "edge"
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn created_empty(&self) -> bool {
        self.created_empty
    }

    async fn get(&self, collection: Collection, id: Uuid) -> Result<Option<Stored>, VectorError> {
        Ok(self
            .get_many(collection, &[id])
            .await?
            .into_iter()
            .next()
            .flatten())
    }

    /// One `retrieve` for every id.
    async fn get_many(
        &self,
        collection: Collection,
        ids: &[Uuid],
    ) -> Result<Vec<Option<Stored>>, VectorError> {
        let shard = self.shard(collection).await?;
        let ids = ids.to_vec();
        blocking(move || {
            let wanted: Vec<PointId> = ids.iter().map(|id| PointId::Uuid(*id)).collect();
            let records = shard
                .retrieve(
                    &wanted,
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Selector(vec![DENSE.to_string()])),
                )
                .map_err(store_err)?;
            let mut found: HashMap<Uuid, Stored> = records
                .into_iter()
                .filter_map(|r| {
                    let id = uuid_of(&r.id)?;
                    let dense = match r.vector {
                        Some(VectorStructInternal::Named(mut named)) => match named.remove(DENSE) {
                            Some(VectorInternal::Dense(v)) => Some(v),
                            _ => None,
                        },
                        Some(VectorStructInternal::Single(v)) => Some(v),
                        _ => None,
                    };
                    Some((
                        id,
                        Stored {
                            payload: r.payload.map(|p| p.0).unwrap_or_default(),
                            dense,
                        },
                    ))
                })
                .collect();
            Ok(ids.iter().map(|id| found.remove(id)).collect())
        })
        .await
    }

    async fn upsert(&self, collection: Collection, point: Point) -> Result<(), VectorError> {
        self.write_many(collection, vec![point], Vec::new()).await
    }

    /// One upsert operation for every point, then one payload overwrite per
    /// point, all in one blocking call under the write lock.
    async fn write_many(
        &self,
        collection: Collection,
        points: Vec<Point>,
        payloads: Vec<(Uuid, Map<String, Value>)>,
    ) -> Result<(), VectorError> {
        for point in &points {
            check_dimension(self.dimension, &point.dense)?;
        }
        // The lock first: a reopen (under it) waits for every holder of the
        // old shard.
        let _guard = self.write.lock().await;
        let shard = self.shard(collection).await?;
        blocking(move || {
            if !points.is_empty() {
                let mut persisted = Vec::with_capacity(points.len());
                for point in points {
                    let sparse =
                        qdrant_edge::Vector::new_sparse(point.sparse.indices, point.sparse.values)
                            .map_err(|e| VectorError::BadRequest(e.to_string()))?;
                    let vectors = qdrant_edge::Vectors::new_named([
                        (DENSE, qdrant_edge::Vector::new_dense(point.dense)),
                        (SPARSE, sparse),
                    ]);
                    persisted.push(
                        qdrant_edge::PointStruct::new(
                            PointId::Uuid(point.id),
                            vectors,
                            Value::Object(point.payload),
                        )
                        .into(),
                    );
                }
                shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::UpsertPoints(PointInsertOperations::PointsList(persisted)),
                    ))
                    .map_err(store_err)?;
            }
            for (id, payload) in payloads {
                shard.update(overwrite(id, payload)).map_err(store_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn overwrite_payload(
        &self,
        collection: Collection,
        id: Uuid,
        payload: Map<String, Value>,
    ) -> Result<(), VectorError> {
        self.write_many(collection, Vec::new(), vec![(id, payload)])
            .await
    }

    async fn delete(&self, collection: Collection, id: Uuid) -> Result<(), VectorError> {
        // The lock first: a reopen (under it) waits for every holder of the
        // old shard.
        let _guard = self.write.lock().await;
        let shard = self.shard(collection).await?;
        blocking(move || {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePoints {
                        ids: vec![PointId::Uuid(id)],
                    },
                ))
                .map_err(store_err)
        })
        .await
    }

    async fn search(&self, collection: Collection, query: Query) -> Result<Vec<Hit>, VectorError> {
        if query.mode != Mode::Text {
            check_dimension(self.dimension, &query.dense)?;
        }
        let shard = self.shard(collection).await?;
        blocking(move || {
            let filter = to_filter(&query.filter)?;
            let limit = query.limit.max(1);
            let dense = nearest(VectorInternal::Dense(query.dense.clone()), DENSE);
            let sparse = nearest(sparse_query(&query.sparse)?, SPARSE);
            let (prefetches, scoring) = match query.mode {
                Mode::Semantic => (vec![], dense),
                Mode::Text => (vec![], sparse),
                Mode::Hybrid => {
                    let candidates = (limit * 4).max(50);
                    let prefetch = |q: ScoringQuery| Prefetch {
                        prefetches: vec![],
                        query: Some(q),
                        limit: candidates,
                        params: None,
                        filter: filter.clone(),
                        score_threshold: None,
                    };
                    (
                        vec![prefetch(dense), prefetch(sparse)],
                        ScoringQuery::Fusion(Fusion::Rrf {
                            k: 60,
                            weights: None,
                        }),
                    )
                }
            };
            let request = QueryRequest {
                prefetches,
                query: Some(scoring),
                filter,
                score_threshold: None,
                limit,
                offset: 0,
                params: None,
                with_vector: WithVector::Bool(false),
                with_payload: WithPayloadInterface::Bool(true),
            };
            let points = shard.query(request).map_err(store_err)?;
            Ok(points
                .into_iter()
                .filter_map(|p| {
                    Some(Hit {
                        id: uuid_of(&p.id)?,
                        score: p.score,
                        payload: p.payload.map(|p| p.0).unwrap_or_else(Map::new),
                    })
                })
                .collect())
        })
        .await
    }

    async fn count(&self, collection: Collection) -> Result<u64, VectorError> {
        Ok(self.points(collection, true).await? as u64)
    }

    async fn flush(&self) -> Result<(), VectorError> {
        let _guard = self.write.lock().await;
        for collection in Collection::ALL {
            let shard = self.shard(collection).await?;
            blocking(move || {
                shard.flush();
                Ok(())
            })
            .await?;
            self.recycle(collection, WAL_CLOSED_SEGMENTS).await?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), VectorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn point(id: Uuid, dense: Vec<f32>) -> Point {
        Point {
            id,
            dense,
            sparse: Sparse {
                indices: vec![1, 7],
                values: vec![0.5, 1.0],
            },
            payload: json!({"status": "queued", "seq": 1})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    #[tokio::test]
    async fn a_store_keeps_its_dimension_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = EdgeVectors::open(dir.path(), 8).unwrap();
        assert!(store.created_empty());
        let id = Uuid::new_v4();
        store
            .upsert(Collection::Tasks, point(id, vec![0.5; 8]))
            .await
            .unwrap();
        let wrong = store
            .upsert(Collection::Tasks, point(Uuid::new_v4(), vec![0.5; 9]))
            .await;
        assert!(matches!(
            wrong,
            Err(VectorError::Dimension {
                expected: 8,
                got: 9
            })
        ));
        store.flush().await.unwrap();
        drop(store);
        // Reopened with the same dimension: the point is there.
        let store = EdgeVectors::open(dir.path(), 8).unwrap();
        assert!(!store.created_empty());
        let got = store.get(Collection::Tasks, id).await.unwrap().unwrap();
        assert_eq!(got.payload["status"], "queued");
        assert_eq!(got.dense.map(|d| d.len()), Some(8));
        assert_eq!(store.count(Collection::Tasks).await.unwrap(), 1);
        drop(store);
        // Another embedder dimension: refused with the rebuild hint.
        let err = EdgeVectors::open(dir.path(), 16).err().unwrap();
        assert!(matches!(
            err,
            VectorError::Dimension {
                expected: 8,
                got: 16
            }
        ));
        assert!(err.to_string().contains("rebuild"), "{err}");
    }

    #[tokio::test]
    async fn a_reopened_shard_keeps_its_points_and_its_updates_numbering() {
        let dir = tempfile::tempdir().unwrap();
        // 4 KiB WAL segments: a few updates fill one.
        let store = EdgeVectors::open_with_wal_segment(dir.path(), 8, 4096).unwrap();
        let wal = dir.path().join(Collection::Tasks.name()).join("wal");
        let ids: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
        for (i, id) in ids.iter().enumerate() {
            store
                .upsert(Collection::Tasks, point(*id, vec![0.1 + i as f32; 8]))
                .await
                .unwrap();
        }
        for id in &ids {
            store
                .overwrite_payload(Collection::Tasks, *id, payload("assigned", 2))
                .await
                .unwrap();
        }
        let shard = store.shard(Collection::Tasks).await.unwrap();
        blocking(move || {
            shard.flush();
            Ok(())
        })
        .await
        .unwrap();
        drop(store.shard(Collection::Tasks).await.unwrap());
        let before = closed_segments(&wal).unwrap();
        assert!(before.len() > 3, "{} closed segments", before.len());
        // Within the bound: left alone.
        assert!(!store
            .recycle(Collection::Tasks, before.len())
            .await
            .unwrap());
        assert!(store.recycle(Collection::Tasks, 1).await.unwrap());
        let after = closed_segments(&wal).unwrap();
        assert_eq!(
            after,
            before[before.len() - 1..].to_vec(),
            "the newest stays"
        );
        // Every point is there as last written …
        assert_eq!(store.count(Collection::Tasks).await.unwrap(), 200);
        for id in &ids {
            let got = store.get(Collection::Tasks, *id).await.unwrap().unwrap();
            assert_eq!(got.payload["status"], "assigned");
            assert_eq!(got.dense.map(|d| d.len()), Some(8));
        }
        // … and later updates of those points take effect (numbered after
        // the earlier ones, not from zero).
        for id in &ids {
            store
                .overwrite_payload(Collection::Tasks, *id, payload("running", 3))
                .await
                .unwrap();
        }
        let late = Uuid::new_v4();
        store
            .upsert(Collection::Tasks, point(late, vec![0.5; 8]))
            .await
            .unwrap();
        store.flush().await.unwrap();
        drop(store);
        let store = EdgeVectors::open(dir.path(), 8).unwrap();
        assert_eq!(store.count(Collection::Tasks).await.unwrap(), 201);
        for id in &ids {
            let got = store.get(Collection::Tasks, *id).await.unwrap().unwrap();
            assert_eq!(got.payload["status"], "running", "{id}");
        }
        assert!(store.get(Collection::Tasks, late).await.unwrap().is_some());
    }

    fn payload(status: &str, seq: i64) -> Map<String, Value> {
        json!({"status": status, "seq": seq})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }
}
