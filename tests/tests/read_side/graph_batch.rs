//! The Postgres graph applied a batch at a time ends as it does applied one
//! change at a time, including skipped duplicates, merged properties,
//! replaced relationship types and edges written twice.

use projectors::graph::pg;
use projectors::graph::{EdgeSpec, GraphChange, NodeKey};
use serde_json::{json, Map, Value};
use sqlx::{Connection, PgPool};
use tests::TestDb;

fn props(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn edge(from: &NodeKey, rel: &'static str, to: &NodeKey, key: &str, p: Value) -> EdgeSpec {
    EdgeSpec {
        from: from.clone(),
        rel,
        to: to.clone(),
        key: key.into(),
        props: props(p),
    }
}

fn changes() -> Vec<GraphChange> {
    let agent = NodeKey::new("Agent", "a1");
    let task = NodeKey::new("Task", "t1");
    let other = NodeKey::new("Task", "t2");
    let (llm, ocr, web) = (
        NodeKey::new("Capability", "llm"),
        NodeKey::new("Capability", "ocr"),
        NodeKey::new("Capability", "web"),
    );
    let change =
        |owner: &NodeKey, sequence, p: Value, nodes: Vec<&NodeKey>, replace, edges| GraphChange {
            owner: owner.clone(),
            sequence,
            owner_props: props(p),
            nodes: nodes.into_iter().cloned().collect(),
            replace,
            edges,
        };
    vec![
        change(
            &agent,
            1,
            json!({"name": "a", "status": "inactive"}),
            vec![&llm, &ocr],
            vec!["HAS_CAPABILITY"],
            vec![
                edge(&agent, "HAS_CAPABILITY", &llm, "", json!({})),
                edge(&agent, "HAS_CAPABILITY", &ocr, "", json!({})),
            ],
        ),
        change(
            &task,
            1,
            json!({"status": "submitted", "type": "x"}),
            vec![&other],
            vec![],
            vec![edge(&task, "DEPENDS_ON", &other, "", json!({}))],
        ),
        // A duplicate of an applied event: skipped.
        change(&agent, 1, json!({"name": "dup"}), vec![], vec![], vec![]),
        change(
            &task,
            2,
            json!({"status": "assigned"}),
            vec![&agent],
            vec![],
            vec![edge(
                &task,
                "ASSIGNED_TO",
                &agent,
                "1",
                json!({"attempt": 1}),
            )],
        ),
        // Capabilities replaced: llm and ocr go, web comes.
        change(
            &agent,
            2,
            json!({"status": "active"}),
            vec![&web],
            vec!["HAS_CAPABILITY"],
            vec![edge(&agent, "HAS_CAPABILITY", &web, "", json!({}))],
        ),
        // The same edge again with new properties: the last ones stay.
        change(
            &task,
            3,
            json!({"status": "running"}),
            vec![&agent],
            vec![],
            vec![edge(
                &task,
                "ASSIGNED_TO",
                &agent,
                "1",
                json!({"attempt": 1, "started": true}),
            )],
        ),
        // An older event of the task arriving late: skipped.
        change(&task, 2, json!({"status": "stale"}), vec![], vec![], vec![]),
    ]
}

async fn graph(
    pool: &PgPool,
) -> (
    Vec<(String, String, Value, i64)>,
    Vec<(String, String, String, String, Value)>,
) {
    let nodes = sqlx::query_as("SELECT id, label, props, seq FROM graph_nodes ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let edges = sqlx::query_as(
        "SELECT src, rel, dst, key, props FROM graph_edges ORDER BY src, rel, dst, key",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (nodes, edges)
}

#[tokio::test]
async fn a_batch_ends_as_its_changes_applied_one_by_one() {
    let (one, batched) = (TestDb::new().await, TestDb::new().await);
    let (one_pool, batched_pool) = (one.pool().await, batched.pool().await);
    for pool in [&one_pool, &batched_pool] {
        projectors::migrator().run(pool).await.unwrap();
    }
    let changes = changes();

    let mut conn = one_pool.acquire().await.unwrap();
    let mut expected = Vec::new();
    for c in &changes {
        expected.push(pg::apply(&mut conn, c).await.unwrap());
    }
    let mut conn = batched_pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let applied = pg::apply_batch(&mut tx, &changes).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(applied, expected);
    let want = graph(&one_pool).await;
    assert_eq!(graph(&batched_pool).await, want);
    // What the sequence should have left, spelled out.
    let (nodes, edges) = want;
    let agent = nodes.iter().find(|n| n.0 == "Agent:a1").unwrap();
    assert_eq!(agent.2, json!({"name": "a", "status": "active"}));
    assert_eq!(agent.3, 2);
    let task = nodes.iter().find(|n| n.0 == "Task:t1").unwrap();
    assert_eq!(task.2["status"], "running");
    let caps: Vec<&str> = edges
        .iter()
        .filter(|e| e.1 == "HAS_CAPABILITY")
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(caps, ["Capability:web"]);
    let assigned = edges.iter().find(|e| e.1 == "ASSIGNED_TO").unwrap();
    assert_eq!(assigned.4, json!({"attempt": 1, "started": true}));
}
