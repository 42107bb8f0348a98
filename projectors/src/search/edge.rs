//! Qdrant Edge in process: one shard per collection under the data
//! directory. The default vector store — nothing else to run.
//!
//! A shard has one owner: the process that opens it. Its calls are
//! synchronous, so they run on the blocking pool; writes are serialised by a
//! mutex (Edge's own flush must not race an update).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qdrant_edge::{
    Condition, Distance, EdgeConfig, EdgeConfigBuilder, EdgeShard, EdgeSparseVectorParamsBuilder,
    EdgeVectorParamsBuilder, FieldCondition, Fusion, Match, Modifier, NamedQuery,
    PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations, PointOperations,
    Prefetch, QueryEnum, QueryRequest, Range, ScoringQuery, UpdateOperation, ValueVariants,
    VectorInternal, VectorStructInternal, WithPayloadInterface, WithVector,
};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::vectors::{
    check_dimension, Collection, FieldKind, Filter, Hit, Mode, Point, Query, Sparse, Stored,
    VectorError, VectorStore, DENSE, SPARSE,
};

pub struct EdgeVectors {
    root: PathBuf,
    dimension: usize,
    shards: HashMap<Collection, Arc<EdgeShard>>,
    created_empty: bool,
    write: Mutex<()>,
}

fn store_err(e: impl std::fmt::Display) -> VectorError {
    VectorError::Store(e.to_string())
}

fn config(dimension: usize) -> EdgeConfig {
    EdgeConfigBuilder::new()
        .vector(
            DENSE,
            // Half-precision storage: half the memory of the dense vectors,
            // which dominate the shard; cosine ranking is unaffected at this
            // precision for normalised vectors.
            EdgeVectorParamsBuilder::new(dimension, Distance::Cosine)
                .datatype(qdrant_edge::VectorStorageDatatype::Float16)
                .build(),
        )
        .sparse_vector(
            SPARSE,
            EdgeSparseVectorParamsBuilder::new()
                .modifier(Modifier::Idf)
                .build(),
        )
        .build()
}

impl EdgeVectors {
    /// Opens (or creates) the shards under `root`. Refuses a store whose
    /// dense dimension differs from `dimension`: the embedder changed, and
    /// the projection must be rebuilt into an empty directory.
    pub fn open(root: &Path, dimension: usize) -> Result<Self, VectorError> {
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
                let shard = EdgeShard::new(&path, config(dimension)).map_err(store_err)?;
                for (field, kind) in collection.indexed_fields() {
                    let schema = match kind {
                        FieldKind::Keyword => PayloadSchemaType::Keyword,
                        FieldKind::Integer => PayloadSchemaType::Integer,
                    };
                    shard
                        .update(UpdateOperation::FieldIndexOperation(
                            qdrant_edge::FieldIndexOperations::CreateIndex(
                                qdrant_edge::CreateIndex {
                                    field_name: json_path(field)?,
                                    field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                                },
                            ),
                        ))
                        .map_err(store_err)?;
                }
                shard
            };
            shards.insert(collection, Arc::new(shard));
        }
        Ok(Self {
            root: root.to_path_buf(),
            dimension,
            shards,
            created_empty,
            write: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn shard(&self, collection: Collection) -> Result<Arc<EdgeShard>, VectorError> {
        self.shards
            .get(&collection)
            .cloned()
            .ok_or_else(|| store_err("collection not open"))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VectorError> + Send + 'static,
) -> Result<T, VectorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VectorError::Store(format!("edge call panicked or was cancelled: {e}")))?
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
        let shard = self.shard(collection)?;
        blocking(move || {
            let records = shard
                .retrieve(
                    &[PointId::Uuid(id)],
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Selector(vec![DENSE.to_string()])),
                )
                .map_err(store_err)?;
            Ok(records.into_iter().next().map(|r| {
                let dense = match r.vector {
                    Some(VectorStructInternal::Named(mut named)) => match named.remove(DENSE) {
                        Some(VectorInternal::Dense(v)) => Some(v),
                        _ => None,
                    },
                    Some(VectorStructInternal::Single(v)) => Some(v),
                    _ => None,
                };
                Stored {
                    payload: r.payload.map(|p| p.0).unwrap_or_default(),
                    dense,
                }
            }))
        })
        .await
    }

    async fn upsert(&self, collection: Collection, point: Point) -> Result<(), VectorError> {
        check_dimension(self.dimension, &point.dense)?;
        let shard = self.shard(collection)?;
        let _guard = self.write.lock().await;
        blocking(move || {
            let sparse = qdrant_edge::Vector::new_sparse(point.sparse.indices, point.sparse.values)
                .map_err(|e| VectorError::BadRequest(e.to_string()))?;
            let vectors = qdrant_edge::Vectors::new_named([
                (DENSE, qdrant_edge::Vector::new_dense(point.dense)),
                (SPARSE, sparse),
            ]);
            let persisted = qdrant_edge::PointStruct::new(
                PointId::Uuid(point.id),
                vectors,
                Value::Object(point.payload),
            );
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(vec![
                        persisted.into(),
                    ])),
                ))
                .map_err(store_err)
        })
        .await
    }

    async fn overwrite_payload(
        &self,
        collection: Collection,
        id: Uuid,
        payload: Map<String, Value>,
    ) -> Result<(), VectorError> {
        let shard = self.shard(collection)?;
        let _guard = self.write.lock().await;
        blocking(move || {
            shard
                .update(UpdateOperation::PayloadOperation(
                    qdrant_edge::PayloadOps::OverwritePayload(qdrant_edge::SetPayloadOp {
                        payload: qdrant_edge::Payload(payload),
                        points: Some(vec![PointId::Uuid(id)]),
                        filter: None,
                        key: None,
                    }),
                ))
                .map_err(store_err)
        })
        .await
    }

    async fn delete(&self, collection: Collection, id: Uuid) -> Result<(), VectorError> {
        let shard = self.shard(collection)?;
        let _guard = self.write.lock().await;
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
        let shard = self.shard(collection)?;
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
        let shard = self.shard(collection)?;
        blocking(move || {
            shard
                .count(qdrant_edge::CountRequest {
                    filter: None,
                    exact: true,
                })
                .map(|n| n as u64)
                .map_err(store_err)
        })
        .await
    }

    async fn flush(&self) -> Result<(), VectorError> {
        let _guard = self.write.lock().await;
        let shards: Vec<_> = self.shards.values().cloned().collect();
        blocking(move || {
            for shard in shards {
                shard.flush();
            }
            Ok(())
        })
        .await
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
}
