//! The relationship graph: nodes Agent, Task, Capability, TaskType, Actor
//! and the relationships between them, kept by the `graph` projection.
//!
//! - [`change_for`]: an event → a backend-neutral [`GraphChange`] (pure).
//! - [`GraphStore`]: reads (one primitive: the edges at a set of nodes) and
//!   writes. [`pg::PgGraph`] (default, Postgres tables) and
//!   [`neo4j::Neo4jGraph`] (`NEO4J_URL`) implement it.
//! - [`lineage`], [`neighborhood`], [`path`]: traversals written once over
//!   [`GraphStore`], so both backends answer the same.
//!
//! Idempotency: the aggregate's own node keeps `seq`, the last sequence
//! applied; an event at or below it changes nothing.

pub mod neo4j;
pub mod pg;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use schemas::query::{GraphEdge, GraphNode, GraphView};
use schemas::{AgentEvent, TaskEvent};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;

use crate::decode::{DomainEvent, ProjectedEvent};
use crate::runtime::{Applied, ApplyError, Projection};

/// Name of the graph projection (consumer, checkpoint, dead letters).
pub const PROJECTION: &str = "graph";

pub const HAS_CAPABILITY: &str = "HAS_CAPABILITY";
pub const REQUIRES: &str = "REQUIRES";
pub const OF_TYPE: &str = "OF_TYPE";
pub const SUBMITTED: &str = "SUBMITTED";
pub const ASSIGNED_TO: &str = "ASSIGNED_TO";
pub const CHILD_OF: &str = "CHILD_OF";
pub const DEPENDS_ON: &str = "DEPENDS_ON";

/// Every label a node can have (a fixed set: labels never come from input).
pub const LABELS: [&str; 5] = ["Agent", "Task", "Capability", "TaskType", "Actor"];
pub const RELS: [&str; 7] = [
    HAS_CAPABILITY,
    REQUIRES,
    OF_TYPE,
    SUBMITTED,
    ASSIGNED_TO,
    CHILD_OF,
    DEPENDS_ON,
];

/// Graph backend settings, shared by `projectors` and `query-service`.
#[derive(Debug, Clone, clap::Args)]
pub struct GraphSettings {
    /// Neo4j Bolt URL (e.g. 127.0.0.1:7687). Unset: the graph lives in Postgres.
    #[arg(long, env = "NEO4J_URL", global = true)]
    pub neo4j_url: Option<String>,

    #[arg(long, env = "NEO4J_USER", default_value = "neo4j", global = true)]
    pub neo4j_user: String,

    #[arg(long, env = "NEO4J_PASSWORD", global = true, hide_env_values = true)]
    pub neo4j_password: Option<String>,

    /// Least time between two batches of the graph projection, in ms
    /// ([`crate::runtime::Projection::linger`]); 0 applies every event at once.
    #[arg(long, env = "GRAPH_LINGER_MS", default_value_t = crate::runtime::DEFAULT_LINGER_MS, global = true)]
    pub graph_linger_ms: u64,
}

impl GraphSettings {
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.graph_linger_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("graph store unavailable: {0}")]
    Unavailable(String),
    #[error("graph store: {0}")]
    Store(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    pub label: &'static str,
    pub key: String,
}

impl NodeKey {
    pub fn new(label: &'static str, key: impl Into<String>) -> Self {
        Self {
            label,
            key: key.into(),
        }
    }

    pub fn id(&self) -> String {
        format!("{}:{}", self.label, self.key)
    }
}

/// Splits `<label>:<key>` into a known label and its key.
pub fn parse_node_id(id: &str) -> Option<NodeKey> {
    let (label, key) = id.split_once(':')?;
    let label = LABELS.iter().find(|l| **l == label)?;
    (!key.is_empty()).then(|| NodeKey::new(label, key))
}

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSpec {
    pub from: NodeKey,
    pub rel: &'static str,
    pub to: NodeKey,
    /// Tells apart several edges of one type between the same nodes
    /// (the attempt of `ASSIGNED_TO`); empty otherwise.
    pub key: String,
    pub props: Map<String, Value>,
}

/// What one event does to the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphChange {
    /// The aggregate's node; it carries the guard `seq`.
    pub owner: NodeKey,
    pub sequence: i64,
    /// Merged into the owner's properties.
    pub owner_props: Map<String, Value>,
    /// Other nodes the edges need (created bare when missing).
    pub nodes: Vec<NodeKey>,
    /// Relationship types leaving the owner to drop before adding `edges`
    /// (a capability list replaced).
    pub replace: Vec<&'static str>,
    pub edges: Vec<EdgeSpec>,
}

fn props(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The change an event makes.
pub fn change_for(event: &ProjectedEvent) -> GraphChange {
    let env = &event.envelope;
    let sequence = env.sequence;
    let at = env.occurred_at.to_rfc3339();
    match &event.event {
        DomainEvent::Task(e) => {
            let task = NodeKey::new("Task", env.aggregate_id.clone());
            let mut change = GraphChange {
                owner: task.clone(),
                sequence,
                owner_props: props(json!({"updated_at": at})),
                nodes: vec![],
                replace: vec![],
                edges: vec![],
            };
            let edge = |rel: &'static str, from: &NodeKey, to: &NodeKey| EdgeSpec {
                from: from.clone(),
                rel,
                to: to.clone(),
                key: String::new(),
                props: Map::new(),
            };
            let status = match e {
                TaskEvent::TaskSubmitted(s) => {
                    change.owner_props.extend(props(json!({
                        "task_type": s.task_type,
                        "priority": s.priority,
                        "created_at": at,
                    })));
                    let ty = NodeKey::new("TaskType", s.task_type.clone());
                    change.edges.push(edge(OF_TYPE, &task, &ty));
                    change.nodes.push(ty);
                    if !env.metadata.actor.is_empty() {
                        let actor = NodeKey::new("Actor", env.metadata.actor.clone());
                        change.edges.push(edge(SUBMITTED, &actor, &task));
                        change.nodes.push(actor);
                    }
                    for c in &s.required_capabilities {
                        let cap = NodeKey::new("Capability", c.clone());
                        change.edges.push(edge(REQUIRES, &task, &cap));
                        change.nodes.push(cap);
                    }
                    if let Some(parent) = s.parent_task_id {
                        let p = NodeKey::new("Task", parent.to_string());
                        change.edges.push(edge(CHILD_OF, &task, &p));
                        change.nodes.push(p);
                    }
                    for d in &s.depends_on {
                        let dep = NodeKey::new("Task", d.to_string());
                        change.edges.push(edge(DEPENDS_ON, &task, &dep));
                        change.nodes.push(dep);
                    }
                    Some("submitted")
                }
                TaskEvent::TaskScheduled(_) | TaskEvent::TaskRetryScheduled(_) => Some("scheduled"),
                TaskEvent::TaskQueued(_) => Some("queued"),
                TaskEvent::TaskAssigned(a) => {
                    let agent = NodeKey::new("Agent", a.agent_id.to_string());
                    change.edges.push(EdgeSpec {
                        key: a.attempt.to_string(),
                        props: props(json!({"attempt": a.attempt})),
                        ..edge(ASSIGNED_TO, &task, &agent)
                    });
                    change.nodes.push(agent);
                    change
                        .owner_props
                        .insert("agent_id".into(), a.agent_id.to_string().into());
                    Some("assigned")
                }
                TaskEvent::TaskStarted(_) => Some("running"),
                TaskEvent::TaskProgressReported(_) => None,
                TaskEvent::TaskSucceeded(_) => Some("succeeded"),
                TaskEvent::TaskFailed(_) => Some("failed"),
                TaskEvent::TaskCancelled(_) => Some("cancelled"),
                TaskEvent::TaskTimedOut(_) => Some("timed_out"),
            };
            if let Some(s) = status {
                change.owner_props.insert("status".into(), s.into());
            }
            change
        }
        DomainEvent::Agent(e) => {
            let agent = NodeKey::new("Agent", env.aggregate_id.clone());
            let mut change = GraphChange {
                owner: agent.clone(),
                sequence,
                owner_props: props(json!({"updated_at": at})),
                nodes: vec![],
                replace: vec![],
                edges: vec![],
            };
            let capabilities = |caps: &[String], change: &mut GraphChange| {
                change.replace.push(HAS_CAPABILITY);
                for c in caps {
                    let cap = NodeKey::new("Capability", c.clone());
                    change.edges.push(EdgeSpec {
                        from: agent.clone(),
                        rel: HAS_CAPABILITY,
                        to: cap.clone(),
                        key: String::new(),
                        props: Map::new(),
                    });
                    change.nodes.push(cap);
                }
            };
            let status = match e {
                AgentEvent::AgentCreated(c) => {
                    change.owner_props.extend(props(json!({
                        "name": c.name,
                        "agent_type": c.agent_type,
                        "created_at": at,
                    })));
                    capabilities(&c.capabilities, &mut change);
                    "inactive"
                }
                AgentEvent::AgentUpdated(u) => {
                    if let Some(name) = &u.name {
                        change
                            .owner_props
                            .insert("name".into(), name.clone().into());
                    }
                    if let Some(caps) = &u.capabilities {
                        capabilities(caps, &mut change);
                    }
                    return change;
                }
                AgentEvent::AgentActivated(_) | AgentEvent::AgentRecovered(_) => "active",
                AgentEvent::AgentDeactivated(_) => "inactive",
                AgentEvent::AgentMarkedUnhealthy(_) => "unhealthy",
                AgentEvent::AgentRetired(_) => "retired",
            };
            change.owner_props.insert("status".into(), status.into());
            change
        }
    }
}

/// Which way edges are followed from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
    Both,
}

#[async_trait::async_trait]
pub trait GraphStore: Send + Sync {
    /// `postgres` or `neo4j`.
    fn backend(&self) -> &'static str;
    /// The nodes with these ids (missing ones left out).
    async fn nodes(&self, ids: &[String]) -> Result<Vec<GraphNode>, GraphError>;
    /// Edges touching any of `ids` in `direction`, of the given types (all when empty).
    async fn edges(
        &self,
        ids: &[String],
        rels: &[&str],
        direction: Direction,
    ) -> Result<Vec<GraphEdge>, GraphError>;
    async fn ping(&self) -> Result<(), GraphError>;
}

fn edge_key(e: &GraphEdge) -> (String, String, String, String) {
    let attempt = e
        .properties
        .get("attempt")
        .map(|v| v.to_string())
        .unwrap_or_default();
    (e.from.clone(), e.rel.clone(), e.to.clone(), attempt)
}

/// Collects nodes and edges of a traversal.
struct Collect {
    root: String,
    node_ids: BTreeSet<String>,
    edges: BTreeMap<(String, String, String, String), GraphEdge>,
    groups: BTreeMap<String, Vec<String>>,
    truncated: bool,
}

impl Collect {
    fn new(root: &str) -> Self {
        Self {
            root: root.to_string(),
            node_ids: BTreeSet::from([root.to_string()]),
            edges: BTreeMap::new(),
            groups: BTreeMap::new(),
            truncated: false,
        }
    }

    fn add_edge(&mut self, e: GraphEdge) {
        self.node_ids.insert(e.from.clone());
        self.node_ids.insert(e.to.clone());
        self.edges.insert(edge_key(&e), e);
    }

    async fn finish(self, store: &dyn GraphStore) -> Result<GraphView, GraphError> {
        let ids: Vec<String> = self.node_ids.into_iter().collect();
        let mut nodes = store.nodes(&ids).await?;
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(GraphView {
            root: self.root,
            nodes,
            edges: self.edges.into_values().collect(),
            groups: self.groups,
            truncated: self.truncated,
        })
    }
}

/// Follows `rel` from `root` in `direction` up to `depth` hops; returns the
/// nodes reached (in order of discovery) and adds the edges to `out`.
async fn walk(
    store: &dyn GraphStore,
    root: &str,
    rel: &'static str,
    direction: Direction,
    depth: u32,
    out: &mut Collect,
) -> Result<Vec<String>, GraphError> {
    let mut seen = BTreeSet::from([root.to_string()]);
    let mut reached = Vec::new();
    let mut frontier = vec![root.to_string()];
    for _ in 0..depth {
        if frontier.is_empty() {
            break;
        }
        let edges = store.edges(&frontier, &[rel], direction).await?;
        let mut next = Vec::new();
        for e in edges {
            let other = if direction == Direction::Out {
                e.to.clone()
            } else {
                e.from.clone()
            };
            if !frontier.contains(if direction == Direction::Out {
                &e.from
            } else {
                &e.to
            }) {
                continue;
            }
            out.add_edge(e);
            if seen.insert(other.clone()) {
                reached.push(other.clone());
                next.push(other);
            }
        }
        frontier = next;
    }
    Ok(reached)
}

/// Ancestors (`CHILD_OF` upward), descendants (downward), dependencies
/// (`DEPENDS_ON` outward) and dependents (inward) of a task, each to `depth`.
pub async fn lineage(
    store: &dyn GraphStore,
    task: &str,
    depth: u32,
) -> Result<Option<GraphView>, GraphError> {
    let root = NodeKey::new("Task", task).id();
    if store.nodes(std::slice::from_ref(&root)).await?.is_empty() {
        return Ok(None);
    }
    let mut out = Collect::new(&root);
    let walks = [
        ("ancestors", CHILD_OF, Direction::Out),
        ("descendants", CHILD_OF, Direction::In),
        ("dependencies", DEPENDS_ON, Direction::Out),
        ("dependents", DEPENDS_ON, Direction::In),
    ];
    for (group, rel, direction) in walks {
        let reached = walk(store, &root, rel, direction, depth, &mut out).await?;
        out.groups.insert(group.to_string(), reached);
    }
    out.finish(store).await.map(Some)
}

/// Everything within `depth` hops of an agent, over every relationship in
/// both directions, up to `limit` nodes. Groups: its capabilities, the tasks
/// assigned to it, and co-workers (other agents reached).
pub async fn neighborhood(
    store: &dyn GraphStore,
    agent: &str,
    depth: u32,
    limit: usize,
) -> Result<Option<GraphView>, GraphError> {
    let root = NodeKey::new("Agent", agent).id();
    if store.nodes(std::slice::from_ref(&root)).await?.is_empty() {
        return Ok(None);
    }
    let mut out = Collect::new(&root);
    let mut frontier = vec![root.clone()];
    'hops: for _ in 0..depth {
        if frontier.is_empty() {
            break;
        }
        let mut edges = store.edges(&frontier, &[], Direction::Both).await?;
        edges.sort_by_key(edge_key);
        let mut next = Vec::new();
        for e in edges {
            let new_nodes = [&e.from, &e.to]
                .iter()
                .filter(|n| !out.node_ids.contains(**n))
                .count();
            if out.node_ids.len() + new_nodes > limit {
                out.truncated = true;
                break 'hops;
            }
            for n in [&e.from, &e.to] {
                if !out.node_ids.contains(n) {
                    next.push(n.clone());
                }
            }
            out.add_edge(e);
        }
        frontier = next;
    }
    let of_label = |label: &str| -> Vec<String> {
        out.node_ids
            .iter()
            .filter(|id| id.starts_with(&format!("{label}:")) && **id != root)
            .cloned()
            .collect()
    };
    let capabilities: Vec<String> = out
        .edges
        .values()
        .filter(|e| e.from == root && e.rel == HAS_CAPABILITY)
        .map(|e| e.to.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let tasks: Vec<String> = out
        .edges
        .values()
        .filter(|e| e.to == root && e.rel == ASSIGNED_TO)
        .map(|e| e.from.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let coworkers = of_label("Agent");
    out.groups.insert("capabilities".into(), capabilities);
    out.groups.insert("tasks".into(), tasks);
    out.groups.insert("coworkers".into(), coworkers);
    out.finish(store).await.map(Some)
}

/// A shortest path between two nodes (edges followed in either direction),
/// at most `max_depth` hops; `Ok(None)` when there is none.
pub async fn path(
    store: &dyn GraphStore,
    from: &str,
    to: &str,
    max_depth: u32,
) -> Result<Option<GraphView>, GraphError> {
    let ends = store.nodes(&[from.to_string(), to.to_string()]).await?;
    if ends.len() < if from == to { 1 } else { 2 } {
        return Ok(None);
    }
    let mut out = Collect::new(from);
    let mut came_from: HashMap<String, (String, GraphEdge)> = HashMap::new();
    let mut seen = BTreeSet::from([from.to_string()]);
    let mut frontier = VecDeque::from([from.to_string()]);
    let mut found = from == to;
    for _ in 0..max_depth {
        if found || frontier.is_empty() {
            break;
        }
        let ids: Vec<String> = frontier.drain(..).collect();
        let mut edges = store.edges(&ids, &[], Direction::Both).await?;
        edges.sort_by_key(edge_key);
        for e in edges {
            for (here, there) in [(&e.from, &e.to), (&e.to, &e.from)] {
                if ids.contains(here) && seen.insert(there.clone()) {
                    came_from.insert(there.clone(), (here.clone(), e.clone()));
                    frontier.push_back(there.clone());
                    if there == to {
                        found = true;
                    }
                }
            }
        }
    }
    if !found {
        return Ok(None);
    }
    let mut order = vec![to.to_string()];
    let mut at = to.to_string();
    while let Some((prev, edge)) = came_from.get(&at) {
        out.add_edge(edge.clone());
        order.push(prev.clone());
        at = prev.clone();
    }
    order.reverse();
    out.node_ids.insert(to.to_string());
    out.groups.insert("path".into(), order);
    out.finish(store).await.map(Some)
}

/// The graph projection over any writable backend.
pub struct GraphProjection {
    writer: Writer,
    linger: Duration,
}

enum Writer {
    /// Writes in the projection's own transaction: exactly once.
    Postgres,
    Neo4j(Arc<neo4j::Neo4jGraph>),
}

impl GraphProjection {
    /// Applies every event as soon as it arrives (see [`Self::lingering`]).
    pub fn postgres() -> Self {
        Self {
            writer: Writer::Postgres,
            linger: Duration::ZERO,
        }
    }

    pub fn neo4j(graph: Arc<neo4j::Neo4jGraph>) -> Self {
        Self {
            writer: Writer::Neo4j(graph),
            linger: Duration::ZERO,
        }
    }

    /// Starts batches at most every `linger`.
    pub fn lingering(self, linger: Duration) -> Self {
        Self { linger, ..self }
    }
}

#[async_trait::async_trait]
impl Projection for GraphProjection {
    fn name(&self) -> &str {
        PROJECTION
    }

    fn linger(&self) -> Duration {
        self.linger
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &ProjectedEvent,
    ) -> Result<Applied, ApplyError> {
        let change = change_for(event);
        match &self.writer {
            Writer::Postgres => pg::apply(conn, &change).await.map_err(ApplyError::from),
            Writer::Neo4j(graph) => graph.apply(&change).await.map_err(|e| match e {
                GraphError::Unavailable(m) => ApplyError::Unavailable(m),
                GraphError::Store(m) => ApplyError::Rejected(m),
            }),
        }
    }

    /// In Postgres, one set of statements per batch ([`pg::apply_batch`]);
    /// Neo4j applies change by change.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[ProjectedEvent],
    ) -> Result<Vec<Applied>, ApplyError> {
        match &self.writer {
            Writer::Postgres => {
                let changes: Vec<GraphChange> = events.iter().map(change_for).collect();
                pg::apply_batch(conn, &changes)
                    .await
                    .map_err(ApplyError::from)
            }
            Writer::Neo4j(_) => {
                let mut applied = Vec::with_capacity(events.len());
                for event in events {
                    applied.push(self.apply(conn, event).await?);
                }
                Ok(applied)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::events::{AgentCreated, AgentUpdated, TaskAssigned, TaskSubmitted};
    use schemas::{EventEnvelope, EventMetadata};
    use uuid::Uuid;

    fn event(aggregate: &str, id: &str, sequence: i64, event: DomainEvent) -> ProjectedEvent {
        ProjectedEvent {
            stream_sequence: 1,
            envelope: EventEnvelope {
                event_id: Uuid::nil(),
                aggregate_type: aggregate.into(),
                aggregate_id: id.into(),
                sequence,
                event_type: String::new(),
                event_version: "1.0".into(),
                occurred_at: chrono::Utc::now(),
                metadata: EventMetadata {
                    actor: "alice".into(),
                    correlation_id: String::new(),
                    causation_id: String::new(),
                    request_id: String::new(),
                },
                payload: Value::Null,
                hash: None,
            },
            event,
        }
    }

    fn rels(c: &GraphChange) -> Vec<(String, &str, String)> {
        c.edges
            .iter()
            .map(|e| (e.from.id(), e.rel, e.to.id()))
            .collect()
    }

    #[test]
    fn a_submitted_task_links_its_type_actor_capabilities_parent_and_dependencies() {
        let parent = Uuid::new_v4();
        let dep = Uuid::new_v4();
        let e = event(
            "task",
            "t1",
            1,
            DomainEvent::Task(TaskEvent::TaskSubmitted(TaskSubmitted {
                task_type: "doc.summarize".into(),
                input: json!({}),
                required_capabilities: vec!["llm".into()],
                priority: 3,
                target_agent_id: None,
                schedule_at: None,
                queue_timeout_secs: None,
                execution_timeout_secs: None,
                max_retries: 0,
                idempotency_key: None,
                parent_task_id: Some(parent),
                depends_on: vec![dep],
            })),
        );
        let c = change_for(&e);
        assert_eq!(c.owner.id(), "Task:t1");
        assert_eq!(c.owner_props["status"], "submitted");
        assert_eq!(
            rels(&c),
            vec![
                ("Task:t1".into(), OF_TYPE, "TaskType:doc.summarize".into()),
                ("Actor:alice".into(), SUBMITTED, "Task:t1".into()),
                ("Task:t1".into(), REQUIRES, "Capability:llm".into()),
                ("Task:t1".into(), CHILD_OF, format!("Task:{parent}")),
                ("Task:t1".into(), DEPENDS_ON, format!("Task:{dep}")),
            ]
        );
    }

    #[test]
    fn assignments_are_keyed_by_attempt_and_capability_updates_replace() {
        let agent = Uuid::new_v4();
        let e = event(
            "task",
            "t1",
            3,
            DomainEvent::Task(TaskEvent::TaskAssigned(TaskAssigned {
                agent_id: agent,
                attempt: 2,
                lease_expires_at: chrono::Utc::now(),
            })),
        );
        let c = change_for(&e);
        assert_eq!(c.edges[0].rel, ASSIGNED_TO);
        assert_eq!(c.edges[0].key, "2");
        assert_eq!(c.edges[0].props["attempt"], 2);
        let created = change_for(&event(
            "agent",
            "a1",
            1,
            DomainEvent::Agent(AgentEvent::AgentCreated(AgentCreated {
                name: "n".into(),
                agent_type: "t".into(),
                capabilities: vec!["x".into()],
                config: json!({}),
                max_concurrent_tasks: 1,
            })),
        ));
        assert_eq!(created.replace, vec![HAS_CAPABILITY]);
        let renamed = change_for(&event(
            "agent",
            "a1",
            2,
            DomainEvent::Agent(AgentEvent::AgentUpdated(AgentUpdated {
                name: Some("m".into()),
                capabilities: None,
                config: None,
                max_concurrent_tasks: None,
            })),
        ));
        assert!(renamed.replace.is_empty() && renamed.edges.is_empty());
        assert_eq!(renamed.owner_props["name"], "m");
    }

    #[test]
    fn node_ids_parse_only_known_labels() {
        assert_eq!(parse_node_id("Task:abc"), Some(NodeKey::new("Task", "abc")));
        assert_eq!(
            parse_node_id("Capability:a:b"),
            Some(NodeKey::new("Capability", "a:b"))
        );
        assert_eq!(parse_node_id("Planet:x"), None);
        assert_eq!(parse_node_id("Task:"), None);
        assert_eq!(parse_node_id("Task"), None);
    }
}
