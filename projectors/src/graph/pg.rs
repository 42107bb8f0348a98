//! The default graph backend: `graph_nodes` and `graph_edges` in Postgres.
//! Writes run inside the projection's transaction (exactly once with its
//! checkpoint); reads are single parameterised statements per hop.

use schemas::query::{GraphEdge, GraphNode};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool, Row};

use super::{Direction, GraphChange, GraphError, GraphStore};
use crate::runtime::Applied;

/// Applies a change unless the owner node has already seen its sequence.
pub async fn apply(conn: &mut PgConnection, change: &GraphChange) -> Result<Applied, sqlx::Error> {
    let owner = change.owner.id();
    let seq: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM graph_nodes WHERE id = $1 FOR UPDATE")
            .bind(&owner)
            .fetch_optional(&mut *conn)
            .await?;
    if seq.is_some_and(|s| s >= change.sequence) {
        return Ok(Applied::Skipped);
    }
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    let mut keys = Vec::new();
    for n in &change.nodes {
        ids.push(n.id());
        labels.push(n.label.to_string());
        keys.push(n.key.clone());
    }
    if !ids.is_empty() {
        sqlx::query(
            "INSERT INTO graph_nodes (id, label, key) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&labels)
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "INSERT INTO graph_nodes (id, label, key, props, seq) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET props = graph_nodes.props || EXCLUDED.props, seq = EXCLUDED.seq",
    )
    .bind(&owner)
    .bind(change.owner.label)
    .bind(&change.owner.key)
    .bind(Value::Object(change.owner_props.clone()))
    .bind(change.sequence)
    .execute(&mut *conn)
    .await?;
    if !change.replace.is_empty() {
        let rels: Vec<String> = change.replace.iter().map(|r| r.to_string()).collect();
        sqlx::query("DELETE FROM graph_edges WHERE src = $1 AND rel = ANY($2)")
            .bind(&owner)
            .bind(&rels)
            .execute(&mut *conn)
            .await?;
    }
    if !change.edges.is_empty() {
        let mut src = Vec::new();
        let mut rel = Vec::new();
        let mut dst = Vec::new();
        let mut key = Vec::new();
        let mut props = Vec::new();
        for e in &change.edges {
            src.push(e.from.id());
            rel.push(e.rel.to_string());
            dst.push(e.to.id());
            key.push(e.key.clone());
            props.push(Value::Object(e.props.clone()));
        }
        sqlx::query(
            "INSERT INTO graph_edges (src, rel, dst, key, props) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[]) \
             ON CONFLICT (src, rel, dst, key) DO UPDATE SET props = EXCLUDED.props",
        )
        .bind(&src)
        .bind(&rel)
        .bind(&dst)
        .bind(&key)
        .bind(&props)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Applied::Applied)
}

/// Reads of the Postgres graph (a read-only pool is enough).
#[derive(Clone)]
pub struct PgGraph {
    pool: PgPool,
}

impl PgGraph {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn store_err(e: sqlx::Error) -> GraphError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            GraphError::Unavailable(e.to_string())
        }
        other => GraphError::Store(other.to_string()),
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[async_trait::async_trait]
impl GraphStore for PgGraph {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn nodes(&self, ids: &[String]) -> Result<Vec<GraphNode>, GraphError> {
        let rows = sqlx::query(
            "SELECT id, label, key, props FROM graph_nodes WHERE id = ANY($1) ORDER BY id",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.into_iter()
            .map(|r| {
                Ok(GraphNode {
                    id: r.try_get("id").map_err(store_err)?,
                    label: r.try_get("label").map_err(store_err)?,
                    key: r.try_get("key").map_err(store_err)?,
                    properties: object(r.try_get("props").map_err(store_err)?),
                })
            })
            .collect()
    }

    async fn edges(
        &self,
        ids: &[String],
        rels: &[&str],
        direction: Direction,
    ) -> Result<Vec<GraphEdge>, GraphError> {
        let rels: Vec<String> = rels.iter().map(|r| r.to_string()).collect();
        let (out, inn) = match direction {
            Direction::Out => (true, false),
            Direction::In => (false, true),
            Direction::Both => (true, true),
        };
        let rows = sqlx::query(
            "SELECT src, rel, dst, props FROM graph_edges \
             WHERE (($3 AND src = ANY($1)) OR ($4 AND dst = ANY($1))) \
               AND (cardinality($2::text[]) = 0 OR rel = ANY($2)) \
             ORDER BY src, rel, dst, key",
        )
        .bind(ids)
        .bind(&rels)
        .bind(out)
        .bind(inn)
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.into_iter()
            .map(|r| {
                Ok(GraphEdge {
                    from: r.try_get("src").map_err(store_err)?,
                    rel: r.try_get("rel").map_err(store_err)?,
                    to: r.try_get("dst").map_err(store_err)?,
                    properties: object(r.try_get("props").map_err(store_err)?),
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), GraphError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }
}
