//! The default graph backend: `graph_nodes` and `graph_edges` in Postgres.
//! Writes run inside the projection's transaction (exactly once with its
//! checkpoint); reads are single parameterised statements per hop.

use std::collections::{HashMap, HashSet};

use schemas::query::{GraphEdge, GraphNode};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool, Row};

use super::{Direction, GraphChange, GraphError, GraphStore, NodeKey};
use crate::runtime::Applied;

/// Applies a change unless the owner node has already seen its sequence.
pub async fn apply(conn: &mut PgConnection, change: &GraphChange) -> Result<Applied, sqlx::Error> {
    let applied = apply_batch(conn, std::slice::from_ref(change)).await?;
    Ok(applied.into_iter().next().unwrap_or(Applied::Skipped))
}

/// Applies a batch of changes, in order, with at most five statements
/// whatever its size: the same result as applying each change in turn. Changes are
/// folded first: an owner's properties merge (later keys win, as `||` does),
/// an edge written twice keeps its last properties, and a replaced
/// relationship type drops the edges added before the replacement too.
/// Rows go in as typed arrays unnested in the select list, where the unnests
/// run in lockstep and stream (`FROM UNNEST(…)` of several arrays would first
/// materialise every row).
pub async fn apply_batch(
    conn: &mut PgConnection,
    changes: &[GraphChange],
) -> Result<Vec<Applied>, sqlx::Error> {
    let owner_ids: Vec<String> = changes
        .iter()
        .map(|c| c.owner.id())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // Locked in id order, as concurrent writers of the same nodes would lock them.
    let mut seen: HashMap<String, i64> =
        sqlx::query_as("SELECT id, seq FROM graph_nodes WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&owner_ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();

    let mut applied = Vec::with_capacity(changes.len());
    let mut bare: HashMap<String, &NodeKey> = HashMap::new();
    let mut owners: HashMap<String, (&NodeKey, Map<String, Value>, i64)> = HashMap::new();
    let mut replaced: HashSet<(String, &'static str)> = HashSet::new();
    let mut edges: HashMap<(String, &'static str, String, String), &Map<String, Value>> =
        HashMap::new();
    for change in changes {
        let owner = change.owner.id();
        if seen.get(&owner).is_some_and(|s| *s >= change.sequence) {
            applied.push(Applied::Skipped);
            continue;
        }
        seen.insert(owner.clone(), change.sequence);
        for n in &change.nodes {
            bare.entry(n.id()).or_insert(n);
        }
        let entry = owners
            .entry(owner.clone())
            .or_insert_with(|| (&change.owner, Map::new(), change.sequence));
        entry.1.extend(
            change
                .owner_props
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        entry.2 = change.sequence;
        for rel in &change.replace {
            replaced.insert((owner.clone(), *rel));
            edges.retain(|(src, r, _, _), _| !(src == &owner && r == rel));
        }
        for e in &change.edges {
            edges.insert((e.from.id(), e.rel, e.to.id(), e.key.clone()), &e.props);
        }
        applied.push(Applied::Applied);
    }

    if !bare.is_empty() {
        let (ids, (labels, keys)): (Vec<&String>, (Vec<&str>, Vec<&str>)) = bare
            .iter()
            .map(|(id, n)| (id, (n.label, n.key.as_str())))
            .unzip();
        sqlx::query(
            "INSERT INTO graph_nodes (id, label, key) \
             SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::text[]) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(labels)
        .bind(keys)
        .execute(&mut *conn)
        .await?;
    }
    if !owners.is_empty() {
        let mut ids = Vec::with_capacity(owners.len());
        let mut labels = Vec::with_capacity(owners.len());
        let mut keys = Vec::with_capacity(owners.len());
        let mut props = Vec::with_capacity(owners.len());
        let mut seqs = Vec::with_capacity(owners.len());
        for (id, (node, p, seq)) in owners {
            ids.push(id);
            labels.push(node.label);
            keys.push(node.key.as_str());
            props.push(Value::Object(p));
            seqs.push(seq);
        }
        sqlx::query(
            "INSERT INTO graph_nodes (id, label, key, props, seq) \
             SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::text[]), unnest($4::jsonb[]), \
                 unnest($5::bigint[]) \
             ON CONFLICT (id) DO UPDATE SET props = graph_nodes.props || EXCLUDED.props, seq = EXCLUDED.seq",
        )
        .bind(&ids)
        .bind(&labels)
        .bind(&keys)
        .bind(&props)
        .bind(&seqs)
        .execute(&mut *conn)
        .await?;
    }
    if !replaced.is_empty() {
        let (src, rel): (Vec<String>, Vec<&str>) = replaced.into_iter().unzip();
        sqlx::query(
            "DELETE FROM graph_edges e USING UNNEST($1::text[], $2::text[]) AS r(src, rel) \
             WHERE e.src = r.src AND e.rel = r.rel",
        )
        .bind(&src)
        .bind(&rel)
        .execute(&mut *conn)
        .await?;
    }
    if !edges.is_empty() {
        let mut src = Vec::with_capacity(edges.len());
        let mut rel = Vec::with_capacity(edges.len());
        let mut dst = Vec::with_capacity(edges.len());
        let mut key = Vec::with_capacity(edges.len());
        let mut props = Vec::with_capacity(edges.len());
        for ((s, r, d, k), p) in edges {
            src.push(s);
            rel.push(r);
            dst.push(d);
            key.push(k);
            props.push(Value::Object(p.clone()));
        }
        sqlx::query(
            "INSERT INTO graph_edges (src, rel, dst, key, props) \
             SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::text[]), unnest($4::text[]), \
                 unnest($5::jsonb[]) \
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
    Ok(applied)
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
