//! A Qdrant server through `qdrant-client` (gRPC), chosen by `QDRANT_URL`.
//! Same collections, vectors, payload indexes and queries as the Edge store.
//! BM25 sparse vectors are computed here (the same tokenizer as Edge) and
//! the server weighs them with its IDF modifier.

use std::collections::HashMap;
use std::time::Duration;

use qdrant_client::qdrant::{
    point_id::PointIdOptions, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, FieldType, Fusion, GetPointsBuilder,
    IntegerIndexParamsBuilder, Modifier, PointId, PointStruct, PointsIdsList, PrefetchQueryBuilder,
    Query as QdrantQuery, QueryPointsBuilder, Range, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, UpsertPointsBuilder, VectorInput, VectorParamsBuilder,
    VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::vectors::{
    check_dimension, Collection, Filter, Hit, Mode, Point, Query, Stored, VectorError, VectorStore,
    DENSE, SPARSE,
};

pub struct QdrantVectors {
    client: Qdrant,
    prefix: String,
    dimension: usize,
    created_empty: bool,
}

fn unavailable(e: impl std::fmt::Display) -> VectorError {
    VectorError::Unavailable(e.to_string())
}

fn point_uuid(id: Option<&PointId>) -> Option<Uuid> {
    match id?.point_id_options.as_ref()? {
        PointIdOptions::Uuid(s) => Uuid::parse_str(s).ok(),
        PointIdOptions::Num(_) => None,
    }
}

fn to_json(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Map<String, Value> {
    payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect()
}

fn to_filter(filter: &Filter) -> Option<qdrant_client::qdrant::Filter> {
    if filter.is_empty() {
        return None;
    }
    let mut must: Vec<Condition> = Vec::new();
    for (field, value) in &filter.keyword {
        must.push(Condition::matches(field.clone(), value.clone()));
    }
    for (field, value) in &filter.integer {
        must.push(Condition::matches(field.clone(), *value));
    }
    for (field, from, to) in &filter.range {
        must.push(Condition::range(
            field.clone(),
            Range {
                gte: from.map(|v| v as f64),
                lt: to.map(|v| v as f64),
                gt: None,
                lte: None,
            },
        ));
    }
    let mut must_not: Vec<Condition> = Vec::new();
    for (field, value) in &filter.not_keyword {
        must_not.push(Condition::matches(field.clone(), value.clone()));
    }
    if let Some(id) = filter.exclude_id {
        must_not.push(Condition::has_id([PointId::from(id.to_string())]));
    }
    Some(qdrant_client::qdrant::Filter {
        must,
        must_not,
        ..Default::default()
    })
}

impl QdrantVectors {
    /// Connects, creates the collections (and payload indexes) that do not
    /// exist, and refuses collections of another dense dimension.
    pub async fn connect(
        url: &str,
        api_key: Option<String>,
        prefix: &str,
        dimension: usize,
        timeout: Duration,
    ) -> Result<Self, VectorError> {
        let mut builder = Qdrant::from_url(url)
            .timeout(timeout)
            .connect_timeout(timeout)
            .skip_compatibility_check();
        if let Some(key) = api_key {
            builder = builder.api_key(key);
        }
        let client = builder.build().map_err(unavailable)?;
        let mut store = Self {
            client,
            prefix: prefix.to_string(),
            dimension,
            created_empty: false,
        };
        let mut created = 0;
        for collection in Collection::ALL {
            if store.ensure(collection).await? {
                created += 1;
            }
        }
        store.created_empty = created == Collection::ALL.len();
        Ok(store)
    }

    fn name(&self, collection: Collection) -> String {
        format!("{}_{}", self.prefix, collection.name())
    }

    /// True when it created the collection.
    async fn ensure(&self, collection: Collection) -> Result<bool, VectorError> {
        let name = self.name(collection);
        if self
            .client
            .collection_exists(&name)
            .await
            .map_err(unavailable)?
        {
            let info = self
                .client
                .collection_info(&name)
                .await
                .map_err(unavailable)?;
            let size = info
                .result
                .and_then(|r| r.config)
                .and_then(|c| c.params)
                .and_then(|p| p.vectors_config)
                .and_then(|v| v.config)
                .and_then(|c| match c {
                    qdrant_client::qdrant::vectors_config::Config::ParamsMap(m) => {
                        m.map.get(DENSE).map(|p| p.size as usize)
                    }
                    qdrant_client::qdrant::vectors_config::Config::Params(_) => None,
                })
                .unwrap_or(0);
            if size != self.dimension {
                return Err(VectorError::Dimension {
                    expected: size,
                    got: self.dimension,
                });
            }
            return Ok(false);
        }
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params(
            DENSE,
            VectorParamsBuilder::new(
                self.dimension as u64,
                qdrant_client::qdrant::Distance::Cosine,
            ),
        );
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            SPARSE,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf as i32),
        );
        self.client
            .create_collection(
                CreateCollectionBuilder::new(&name)
                    .vectors_config(vectors)
                    .sparse_vectors_config(sparse),
            )
            .await
            .map_err(unavailable)?;
        for (field, kind) in collection.indexed_fields() {
            let index = match kind.integer_indexes() {
                None => CreateFieldIndexCollectionBuilder::new(&name, *field, FieldType::Keyword),
                Some((lookup, range)) => {
                    CreateFieldIndexCollectionBuilder::new(&name, *field, FieldType::Integer)
                        .field_index_params(IntegerIndexParamsBuilder::new(lookup, range))
                }
            };
            self.client
                .create_field_index(index.wait(true))
                .await
                .map_err(unavailable)?;
        }
        Ok(true)
    }
}

#[async_trait::async_trait]
impl VectorStore for QdrantVectors {
    fn backend(&self) -> &'static str {
        "qdrant"
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn created_empty(&self) -> bool {
        self.created_empty
    }

    async fn get(&self, collection: Collection, id: Uuid) -> Result<Option<Stored>, VectorError> {
        let response = self
            .client
            .get_points(
                GetPointsBuilder::new(self.name(collection), vec![PointId::from(id.to_string())])
                    .with_payload(true)
                    .with_vectors(true),
            )
            .await
            .map_err(unavailable)?;
        Ok(response.result.into_iter().next().map(|p| {
            let dense = p
                .vectors
                .as_ref()
                .and_then(|v| v.get_vector_by_name(DENSE))
                .and_then(|v| match v {
                    qdrant_client::qdrant::vector_output::Vector::Dense(d) => Some(d.data),
                    _ => None,
                });
            Stored {
                payload: to_json(p.payload),
                dense,
            }
        }))
    }

    async fn upsert(&self, collection: Collection, point: Point) -> Result<(), VectorError> {
        check_dimension(self.dimension, &point.dense)?;
        let payload = Payload::try_from(Value::Object(point.payload))
            .map_err(|e| VectorError::BadRequest(e.to_string()))?;
        let vectors: HashMap<String, qdrant_client::qdrant::Vector> = HashMap::from([
            (
                DENSE.to_string(),
                qdrant_client::qdrant::Vector::new_dense(point.dense),
            ),
            (
                SPARSE.to_string(),
                qdrant_client::qdrant::Vector::new_sparse(
                    point.sparse.indices,
                    point.sparse.values,
                ),
            ),
        ]);
        let p = PointStruct::new(point.id.to_string(), vectors, payload);
        self.client
            .upsert_points(UpsertPointsBuilder::new(self.name(collection), vec![p]).wait(true))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn overwrite_payload(
        &self,
        collection: Collection,
        id: Uuid,
        payload: Map<String, Value>,
    ) -> Result<(), VectorError> {
        let payload = Payload::try_from(Value::Object(payload))
            .map_err(|e| VectorError::BadRequest(e.to_string()))?;
        self.client
            .overwrite_payload(
                qdrant_client::qdrant::SetPayloadPointsBuilder::new(self.name(collection), payload)
                    .points_selector(PointsIdsList {
                        ids: vec![PointId::from(id.to_string())],
                    })
                    .wait(true),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete(&self, collection: Collection, id: Uuid) -> Result<(), VectorError> {
        self.client
            .delete_points(
                DeletePointsBuilder::new(self.name(collection))
                    .points(PointsIdsList {
                        ids: vec![PointId::from(id.to_string())],
                    })
                    .wait(true),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn search(&self, collection: Collection, query: Query) -> Result<Vec<Hit>, VectorError> {
        if query.mode != Mode::Text {
            check_dimension(self.dimension, &query.dense)?;
        }
        let filter = to_filter(&query.filter);
        let limit = query.limit.max(1) as u64;
        let dense = || QdrantQuery::new_nearest(VectorInput::new_dense(query.dense.clone()));
        let sparse = || {
            QdrantQuery::new_nearest(VectorInput::new_sparse(
                query.sparse.indices.clone(),
                query.sparse.values.clone(),
            ))
        };
        let mut request = QueryPointsBuilder::new(self.name(collection))
            .limit(limit)
            .with_payload(true);
        match query.mode {
            Mode::Semantic => request = request.query(dense()).using(DENSE),
            Mode::Text => request = request.query(sparse()).using(SPARSE),
            Mode::Hybrid => {
                let candidates = (limit * 4).max(50);
                let mut dense_prefetch = PrefetchQueryBuilder::default()
                    .query(dense())
                    .using(DENSE)
                    .limit(candidates);
                let mut sparse_prefetch = PrefetchQueryBuilder::default()
                    .query(sparse())
                    .using(SPARSE)
                    .limit(candidates);
                if let Some(f) = &filter {
                    dense_prefetch = dense_prefetch.filter(f.clone());
                    sparse_prefetch = sparse_prefetch.filter(f.clone());
                }
                request = request
                    .add_prefetch(dense_prefetch)
                    .add_prefetch(sparse_prefetch)
                    .query(QdrantQuery::new_fusion(Fusion::Rrf));
            }
        }
        if let Some(f) = filter {
            request = request.filter(f);
        }
        let response = self.client.query(request).await.map_err(unavailable)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| {
                Some(Hit {
                    id: point_uuid(p.id.as_ref())?,
                    score: p.score,
                    payload: to_json(p.payload),
                })
            })
            .collect())
    }

    async fn count(&self, collection: Collection) -> Result<u64, VectorError> {
        let response = self
            .client
            .count(CountPointsBuilder::new(self.name(collection)).exact(true))
            .await
            .map_err(unavailable)?;
        Ok(response.result.map(|r| r.count).unwrap_or(0))
    }

    async fn flush(&self) -> Result<(), VectorError> {
        // Every upsert waited for the server to apply it.
        Ok(())
    }

    async fn ping(&self) -> Result<(), VectorError> {
        self.client.health_check().await.map_err(unavailable)?;
        Ok(())
    }
}
