//! Neo4j through `neo4rs`, chosen by `NEO4J_URL`. Every node has the label
//! `Node` (unique `uid` = `<label>:<key>`, a constraint created at start)
//! plus its own label; writes are MERGEs in one transaction per event, every
//! value a parameter. Labels and relationship types in the statement text
//! come only from the fixed sets in [`super::LABELS`] and [`super::RELS`].

use std::collections::HashMap;

use neo4rs::{query, BoltType, Graph};
use schemas::query::{GraphEdge, GraphNode};
use serde_json::{Map, Value};

use super::{Direction, GraphChange, GraphError, GraphStore, NodeKey, LABELS, RELS};
use crate::runtime::Applied;

pub struct Neo4jGraph {
    graph: Graph,
}

fn unavailable(e: impl std::fmt::Display) -> GraphError {
    GraphError::Unavailable(e.to_string())
}

/// JSON properties → Bolt (strings, integers, floats, booleans; anything
/// else as its JSON text).
fn bolt_props(props: &Map<String, Value>) -> HashMap<String, BoltType> {
    props
        .iter()
        .map(|(k, v)| {
            let b: BoltType = match v {
                Value::String(s) => s.clone().into(),
                Value::Bool(b) => (*b).into(),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => i.into(),
                    None => n.as_f64().unwrap_or_default().into(),
                },
                other => other.to_string().into(),
            };
            (k.clone(), b)
        })
        .collect()
}

fn checked_label(label: &str) -> Result<&'static str, GraphError> {
    LABELS
        .iter()
        .find(|l| **l == label)
        .copied()
        .ok_or_else(|| GraphError::Store(format!("unknown label {label:?}")))
}

fn checked_rel(rel: &str) -> Result<&'static str, GraphError> {
    RELS.iter()
        .find(|r| **r == rel)
        .copied()
        .ok_or_else(|| GraphError::Store(format!("unknown relationship {rel:?}")))
}

fn merge_node(n: &NodeKey) -> Result<neo4rs::Query, GraphError> {
    let label = checked_label(n.label)?;
    Ok(query(&format!(
        "MERGE (n:Node {{uid: $uid}}) ON CREATE SET n.label = $label, n.key = $key, n.seq = 0 SET n:{label}"
    ))
    .param("uid", n.id())
    .param("label", n.label)
    .param("key", n.key.clone()))
}

impl Neo4jGraph {
    /// Connects and creates the uniqueness constraint.
    pub async fn connect(url: &str, user: &str, password: &str) -> Result<Self, GraphError> {
        let graph = Graph::new(url, user, password).await.map_err(unavailable)?;
        graph
            .run(query(
                "CREATE CONSTRAINT sutazai_node_uid IF NOT EXISTS FOR (n:Node) REQUIRE n.uid IS UNIQUE",
            ))
            .await
            .map_err(unavailable)?;
        Ok(Self { graph })
    }

    /// Applies a change unless the owner node has already seen its sequence.
    pub async fn apply(&self, change: &GraphChange) -> Result<Applied, GraphError> {
        let owner = change.owner.id();
        let mut rows = self
            .graph
            .execute(
                query("MATCH (n:Node {uid: $uid}) RETURN n.seq AS seq").param("uid", owner.clone()),
            )
            .await
            .map_err(unavailable)?;
        if let Some(row) = rows.next().await.map_err(unavailable)? {
            let seq: Option<i64> = row.get("seq").ok();
            if seq.is_some_and(|s| s >= change.sequence) {
                return Ok(Applied::Skipped);
            }
        }
        let mut statements = Vec::new();
        for n in &change.nodes {
            statements.push(merge_node(n)?);
        }
        let label = checked_label(change.owner.label)?;
        statements.push(
            query(&format!(
                "MERGE (n:Node {{uid: $uid}}) ON CREATE SET n.label = $label, n.key = $key \
                 SET n += $props, n.seq = $seq, n:{label}"
            ))
            .param("uid", owner.clone())
            .param("label", change.owner.label)
            .param("key", change.owner.key.clone())
            .param("props", bolt_props(&change.owner_props))
            .param("seq", change.sequence),
        );
        for rel in &change.replace {
            let rel = checked_rel(rel)?;
            statements.push(
                query(&format!(
                    "MATCH (n:Node {{uid: $uid}})-[r:{rel}]->() DELETE r"
                ))
                .param("uid", owner.clone()),
            );
        }
        for e in &change.edges {
            let rel = checked_rel(e.rel)?;
            statements.push(
                query(&format!(
                    "MATCH (a:Node {{uid: $from}}), (b:Node {{uid: $to}}) \
                     MERGE (a)-[r:{rel} {{key: $key}}]->(b) SET r += $props"
                ))
                .param("from", e.from.id())
                .param("to", e.to.id())
                .param("key", e.key.clone())
                .param("props", bolt_props(&e.props)),
            );
        }
        let mut txn = self.graph.start_txn().await.map_err(unavailable)?;
        txn.run_queries(statements).await.map_err(unavailable)?;
        txn.commit().await.map_err(unavailable)?;
        Ok(Applied::Applied)
    }
}

fn strip(mut props: Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    for k in keys {
        props.remove(*k);
    }
    props
}

#[async_trait::async_trait]
impl GraphStore for Neo4jGraph {
    fn backend(&self) -> &'static str {
        "neo4j"
    }

    async fn nodes(&self, ids: &[String]) -> Result<Vec<GraphNode>, GraphError> {
        let mut rows = self
            .graph
            .execute(
                query(
                    "MATCH (n:Node) WHERE n.uid IN $ids \
                     RETURN n.uid AS id, n.label AS label, n.key AS key, properties(n) AS props ORDER BY id",
                )
                .param("ids", ids.to_vec()),
            )
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.map_err(unavailable)? {
            let props: Map<String, Value> = row.get("props").unwrap_or_default();
            out.push(GraphNode {
                id: row
                    .get("id")
                    .map_err(|e| GraphError::Store(e.to_string()))?,
                label: row.get("label").unwrap_or_default(),
                key: row.get("key").unwrap_or_default(),
                properties: strip(props, &["uid", "label", "key", "seq"]),
            });
        }
        Ok(out)
    }

    async fn edges(
        &self,
        ids: &[String],
        rels: &[&str],
        direction: Direction,
    ) -> Result<Vec<GraphEdge>, GraphError> {
        let (out, inn) = match direction {
            Direction::Out => (true, false),
            Direction::In => (false, true),
            Direction::Both => (true, true),
        };
        let rels: Vec<String> = rels.iter().map(|r| r.to_string()).collect();
        let mut rows = self
            .graph
            .execute(
                query(
                    "MATCH (a:Node)-[r]->(b:Node) \
                     WHERE (($out AND a.uid IN $ids) OR ($in AND b.uid IN $ids)) \
                       AND (size($rels) = 0 OR type(r) IN $rels) \
                     RETURN a.uid AS src, type(r) AS rel, b.uid AS dst, properties(r) AS props \
                     ORDER BY src, rel, dst",
                )
                .param("ids", ids.to_vec())
                .param("rels", rels)
                .param("out", out)
                .param("in", inn),
            )
            .await
            .map_err(unavailable)?;
        let mut edges = Vec::new();
        while let Some(row) = rows.next().await.map_err(unavailable)? {
            let props: Map<String, Value> = row.get("props").unwrap_or_default();
            edges.push(GraphEdge {
                from: row
                    .get("src")
                    .map_err(|e| GraphError::Store(e.to_string()))?,
                rel: row
                    .get("rel")
                    .map_err(|e| GraphError::Store(e.to_string()))?,
                to: row
                    .get("dst")
                    .map_err(|e| GraphError::Store(e.to_string()))?,
                properties: strip(props, &["key"]),
            });
        }
        Ok(edges)
    }

    async fn ping(&self) -> Result<(), GraphError> {
        self.graph.run(query("RETURN 1")).await.map_err(unavailable)
    }
}
