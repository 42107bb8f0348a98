//! Semantic search and the relationship graph, end to end: commands over
//! HTTP → events → the vector and graph projections → the query API.
//!
//! The same suite runs against the embedded defaults (Qdrant Edge in the
//! query service, the Postgres graph) — always — and against a Qdrant server
//! and Neo4j when `QDRANT_URL` / `NEO4J_URL` are set (skipped with a printed
//! reason otherwise).

mod batch;
mod text_ranking;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use projectors::graph::{pg::PgGraph, Direction, GraphStore};
use projectors::search::vectors::{Collection, VectorStore};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tests::{
    config, projectors_config, query_config, start_projectors, start_query_with, start_service,
    wait_until, NatsServer, TestDb,
};

/// Where the vectors and the graph live for one run of the suite.
#[derive(Clone, Debug)]
struct Backends {
    qdrant_url: Option<String>,
    neo4j_url: Option<String>,
    /// Unique per run, so runs against one server never collide.
    prefix: String,
}

impl Backends {
    fn embedded() -> Self {
        Self {
            qdrant_url: None,
            neo4j_url: None,
            prefix: String::new(),
        }
    }
}

struct Rig {
    db: TestDb,
    nats: NatsServer,
    backends: Backends,
    command: command_service::Server,
    projectors: Option<projectors::Projectors>,
    query: Option<query_service::Server>,
    http: Client,
    command_url: String,
}

impl Rig {
    async fn start(backends: Backends) -> Self {
        let db = TestDb::new().await;
        let nats = NatsServer::start().await;
        let command = start_service(config(&db, &nats)).await;
        let command_url = format!("http://{}", command.addr);
        let mut rig = Self {
            db,
            nats,
            backends,
            command,
            projectors: None,
            query: None,
            http: Client::new(),
            command_url,
        };
        rig.start_projectors().await;
        rig.start_query().await;
        rig
    }

    fn projectors_config(&self) -> projectors::Config {
        let mut c = projectors_config(&self.db, &self.nats);
        c.search.vector_dir = self.db.vector_dir();
        c.search.qdrant_url = self.backends.qdrant_url.clone();
        c.search.qdrant_collection_prefix = self.backends.prefix.clone();
        c.graph.neo4j_url = self.backends.neo4j_url.clone();
        c.graph.neo4j_password = std::env::var("NEO4J_PASSWORD").ok();
        c
    }

    fn query_config(&self) -> query_service::Config {
        let mut c = query_config(&self.db, &self.nats);
        c.search.qdrant_url = self.backends.qdrant_url.clone();
        c.search.qdrant_collection_prefix = self.backends.prefix.clone();
        c.graph.neo4j_url = self.backends.neo4j_url.clone();
        c.graph.neo4j_password = std::env::var("NEO4J_PASSWORD").ok();
        c
    }

    async fn start_projectors(&mut self) {
        let c = self.projectors_config();
        let projections = projectors::configured_projections(&c)
            .await
            .expect("projections");
        self.projectors = Some(start_projectors(&c, projections).await);
    }

    async fn start_query(&mut self) {
        self.query = Some(start_query_with(self.query_config()).await);
    }

    fn query_url(&self) -> String {
        format!(
            "http://{}",
            self.query.as_ref().expect("query running").addr
        )
    }

    /// The counters of the vector projection, wherever it runs.
    fn vector_status(&self) -> Arc<projectors::runtime::ProjectionStatus> {
        if let Some(s) = self.query.as_ref().and_then(|q| q.vector_status.clone()) {
            return s;
        }
        self.status("vectors")
    }

    fn status(&self, name: &str) -> Arc<projectors::runtime::ProjectionStatus> {
        self.projectors
            .as_ref()
            .expect("projectors running")
            .statuses
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no {name} projection"))
    }

    async fn cmd(&self, path: &str, actor: &str, body: Value) -> String {
        let r = self
            .http
            .post(format!("{}{path}", self.command_url))
            .header("X-Actor", actor)
            .json(&body)
            .send()
            .await
            .expect("command");
        let status = r.status();
        let body: Value = r.json().await.expect("json");
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body["id"].as_str().expect("id").to_string()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.query_url()))
            .send()
            .await
            .expect("query");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn read(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Waits until both projections have applied everything on the stream.
    async fn caught_up(&self) {
        let pool = self.db.pool().await;
        let url = self.nats.url();
        wait_until(
            Duration::from_secs(60),
            "graph and vectors to catch up",
            || {
                let (pool, url) = (pool.clone(), url.clone());
                async move {
                    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                        .fetch_one(&pool)
                        .await
                        .unwrap_or(1);
                    if outbox > 0 {
                        return false;
                    }
                    let last = tests::stream_last_sequence(&url).await as i64;
                    let rows: Vec<(String, i64)> = sqlx::query_as(
                        "SELECT projection, stream_sequence FROM projector_checkpoints \
                     WHERE projection IN ('graph', 'vectors')",
                    )
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                    rows.len() == 2 && rows.iter().all(|(_, s)| *s >= last)
                }
            },
        )
        .await;
    }
}

/// 12 actions × 17 subjects = 204 tasks of distinct kinds.
const ACTIONS: [(&str, &str); 12] = [
    ("doc.summarize", "Summarize"),
    ("doc.translate", "Translate into German"),
    ("text.classify", "Classify the sentiment of"),
    ("text.extract", "Extract the named entities from"),
    ("doc.proofread", "Proofread and fix grammar in"),
    ("code.test", "Write unit tests for the parser behind"),
    (
        "data.dedupe",
        "Remove duplicate rows from the spreadsheet of",
    ),
    ("audio.transcribe", "Transcribe the recorded call about"),
    ("image.caption", "Write alt text captions for the photos in"),
    ("data.chart", "Plot a bar chart from the numbers in"),
    ("mail.draft", "Draft a polite reply email about"),
    ("kb.index", "Add to the knowledge base index"),
];

const SUBJECTS: [&str; 17] = [
    "the quarterly sales report",
    "the customer support ticket backlog",
    "the employment contract renewal",
    "the server outage postmortem",
    "the marketing campaign brief",
    "the warehouse inventory audit",
    "the patient intake questionnaire",
    "the mobile app release notes",
    "the supplier invoice dispute",
    "the board meeting minutes",
    "the hiring pipeline metrics",
    "the solar panel maintenance log",
    "the restaurant health inspection",
    "the university course syllabus",
    "the insurance claim for water damage",
    "the podcast episode interview",
    "the railway timetable change",
];

/// Tasks whose text a differently-worded query must find in the top 5.
const NEEDLES: [(&str, &str, &str); 5] = [
    (
        "security.digest",
        "Compile a weekly digest of cybersecurity vulnerability advisories for the infrastructure team",
        "summary each week of security vulnerabilities advisories for infra",
    ),
    (
        "finance.reconcile",
        "Reconcile the bank statements against the general ledger for October",
        "reconciliation of ledger and bank statement october",
    ),
    (
        "hr.onboarding",
        "Prepare onboarding checklists for newly hired software engineers",
        "checklist to onboard new engineering hires",
    ),
    (
        "ops.forecast",
        "Forecast electricity demand for the data centres over the next quarter",
        "predict data centre power consumption next quarter",
    ),
    (
        "legal.redact",
        "Redact personal identifiers from court filings before publication",
        "remove personally identifying information in court documents",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_and_graph_on_embedded_defaults() {
    suite(Backends::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_and_graph_on_qdrant_server_and_neo4j() {
    let qdrant = std::env::var("QDRANT_URL").ok();
    let neo4j = std::env::var("NEO4J_URL").ok();
    if qdrant.is_none() && neo4j.is_none() {
        println!(
            "SKIPPED: set QDRANT_URL (gRPC, e.g. http://127.0.0.1:6334) and/or NEO4J_URL \
             (e.g. 127.0.0.1:7687, with NEO4J_PASSWORD) to run this suite against real servers"
        );
        return;
    }
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    if neo4j.is_some() {
        println!("note: the Neo4j database must be empty (node ids are not prefixed per run)");
    }
    suite(Backends {
        qdrant_url: qdrant,
        neo4j_url: neo4j,
        prefix,
    })
    .await;
}

async fn suite(backends: Backends) {
    let mut rig = Rig::start(backends).await;

    // Agents with descriptions, for agent search and the neighborhood.
    let translator = rig
        .cmd(
            "/api/v1/agents",
            "ops",
            json!({"name": "polyglot", "agent_type": "llm", "capabilities": ["doc.translate", "text.classify"],
                   "max_concurrent_tasks": 2,
                   "config": {"description": "Translates documents between English, German and French"}}),
        )
        .await;
    let coder = rig
        .cmd(
            "/api/v1/agents",
            "ops",
            json!({"name": "builder", "agent_type": "coder", "capabilities": ["code.test", "text.classify"],
                   "max_concurrent_tasks": 2,
                   "config": {"description": "Writes and reviews source code and unit tests"}}),
        )
        .await;
    let painter = rig
        .cmd(
            "/api/v1/agents",
            "ops",
            json!({"name": "lens", "agent_type": "vision", "capabilities": ["image.caption"],
                   "max_concurrent_tasks": 1,
                   "config": {"description": "Describes photographs and images"}}),
        )
        .await;
    for a in [&translator, &coder, &painter] {
        rig.cmd(&format!("/api/v1/agents/{a}/activate"), "ops", json!({}))
            .await;
    }

    // The corpus.
    let mut kinds = BTreeMap::new();
    for (i, (task_type, action)) in ACTIONS.iter().enumerate() {
        for (j, subject) in SUBJECTS.iter().enumerate() {
            let id = rig
                .cmd(
                    "/api/v1/tasks",
                    &format!("user{}", (i + j) % 4),
                    json!({"task_type": task_type, "priority": ((i + j) % 10) as u8,
                           "input": {"text": format!("{action} {subject}")}}),
                )
                .await;
            kinds.insert(id, *task_type);
        }
    }
    let mut needles = Vec::new();
    for (task_type, text, query) in NEEDLES {
        let id = rig
            .cmd(
                "/api/v1/tasks",
                "analyst",
                json!({"task_type": task_type, "priority": 5, "input": {"text": text}}),
            )
            .await;
        needles.push((id, query));
    }
    assert!(kinds.len() + needles.len() >= 200);
    // Cancel the translations: a status to filter on.
    let translations: Vec<String> = kinds
        .iter()
        .filter(|(_, t)| **t == "doc.translate")
        .map(|(id, _)| id.clone())
        .collect();
    for id in &translations {
        rig.cmd(
            &format!("/api/v1/tasks/{id}/cancel"),
            "ops",
            json!({"reason": "not needed"}),
        )
        .await;
    }

    // A known DAG: R ← C1 ← G, R ← C2; D depends on C1 and C2; E on D.
    let submit = |task_type: &'static str, actor: &'static str, extra: Value| {
        let mut body = json!({"task_type": task_type, "input": {"text": task_type}});
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        (task_type, actor, body)
    };
    let (t, a, b) = submit("dag.root", "dag-a", json!({}));
    let r = rig.cmd("/api/v1/tasks", a, b).await;
    let _ = t;
    let (_, a, b) = submit("dag.c1", "dag-b", json!({"parent_task_id": r}));
    let c1 = rig.cmd("/api/v1/tasks", a, b).await;
    let (_, a, b) = submit("dag.c2", "dag-c", json!({"parent_task_id": r}));
    let c2 = rig.cmd("/api/v1/tasks", a, b).await;
    let (_, a, b) = submit("dag.g", "dag-d", json!({"parent_task_id": c1}));
    let g = rig.cmd("/api/v1/tasks", a, b).await;
    let (_, a, b) = submit("dag.d", "dag-e", json!({"depends_on": [c1, c2]}));
    let d = rig.cmd("/api/v1/tasks", a, b).await;
    let (_, a, b) = submit("dag.e", "dag-f", json!({"depends_on": [d]}));
    let e = rig.cmd("/api/v1/tasks", a, b).await;

    // One assignment, for the neighborhood.
    let assigned = kinds
        .iter()
        .find(|(_, t)| **t == "code.test")
        .map(|(id, _)| id.clone())
        .expect("a code.test task");
    rig.cmd(
        &format!("/api/v1/tasks/{assigned}/assign"),
        "coordinator",
        json!({"agent_id": coder, "lease_secs": 60}),
    )
    .await;

    rig.caught_up().await;

    // Hybrid search finds each needle from a differently-worded query.
    for (id, query) in &needles {
        let q = urlencode(query);
        let body = rig
            .read(&format!("/api/v1/search/tasks?q={q}&mode=hybrid&limit=5"))
            .await;
        let ids: Vec<&str> = body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|h| h["id"].as_str())
            .collect();
        assert!(
            ids.contains(&id.as_str()),
            "{query:?} → {ids:?} misses {id}"
        );
        assert_eq!(body["mode"], "hybrid");
        let scores: Vec<f64> = body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|h| h["score"].as_f64().expect("score"))
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "best first: {scores:?}"
        );
    }
    // Semantic and text modes answer too, with the needle first for its own words.
    let body = rig
        .read("/api/v1/search/tasks?q=reconcile%20bank%20statements%20ledger&mode=text&limit=3")
        .await;
    assert_eq!(body["items"][0]["id"], needles[1].0.as_str(), "{body}");
    let body = rig
        .read("/api/v1/search/tasks?q=reconcile%20bank%20statements%20general%20ledger&mode=semantic&limit=3")
        .await;
    assert_eq!(body["items"][0]["id"], needles[1].0.as_str(), "{body}");

    // Filters narrow the results.
    let all = rig.read("/api/v1/search/tasks?q=report&limit=100").await;
    let n_all = all["items"].as_array().map(Vec::len).unwrap_or(0);
    let cancelled = rig
        .read("/api/v1/search/tasks?q=report&status=cancelled&limit=100")
        .await;
    let items = cancelled["items"].as_array().expect("items");
    assert!(
        !items.is_empty() && items.len() < n_all,
        "{} of {n_all}",
        items.len()
    );
    for h in items {
        assert_eq!(h["status"], "cancelled");
        assert_eq!(h["task_type"], "doc.translate");
        assert!(translations.contains(&h["id"].as_str().unwrap_or_default().to_string()));
    }
    let typed = rig
        .read("/api/v1/search/tasks?q=report&task_type=data.chart&priority=3&limit=100")
        .await;
    let items = typed["items"].as_array().expect("items");
    assert!(!items.is_empty());
    for h in items {
        assert_eq!(h["task_type"], "data.chart");
        assert_eq!(h["priority"], 3);
    }
    let held = rig
        .read(&format!("/api/v1/search/tasks?q=parser&agent_id={coder}"))
        .await;
    let ids: Vec<&str> = held["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|h| h["id"].as_str())
        .collect();
    assert_eq!(ids, vec![assigned.as_str()]);
    let future = rig
        .read("/api/v1/search/tasks?q=report&created_after=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(future["items"].as_array().map(Vec::len), Some(0));
    let past = rig
        .read("/api/v1/search/tasks?q=report&created_before=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(past["items"].as_array().map(Vec::len), Some(0));
    // A window around now holds them: the range filter (created_at_ms has a
    // range index only) keeps what falls inside, not only what falls out.
    let window = rig
        .read("/api/v1/search/tasks?q=report&created_after=2000-01-01T00:00:00Z&created_before=2999-01-01T00:00:00Z")
        .await;
    assert!(!window["items"].as_array().expect("items").is_empty());

    // Similar tasks: the task itself left out; every hit shares its action
    // (another summary) or its subject (the same document, another action).
    let summary = kinds
        .iter()
        .find(|(_, t)| **t == "doc.summarize")
        .map(|(id, _)| id.clone())
        .expect("a summary");
    let own = rig.read(&format!("/api/v1/tasks/{summary}")).await;
    let own_text = own["input"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let subject = SUBJECTS
        .iter()
        .find(|s| own_text.ends_with(*s))
        .expect("the summary's subject");
    let similar = rig
        .read(&format!("/api/v1/tasks/{summary}/similar?limit=5"))
        .await;
    let items = similar["items"].as_array().expect("items");
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|h| h["id"] != summary.as_str()));
    for h in items {
        let text = h["text"].as_str().unwrap_or_default();
        assert!(
            h["task_type"] == "doc.summarize" || text.contains(subject),
            "{h} shares neither the action nor {subject:?}"
        );
    }

    // Agent search: a job description finds the agent that fits.
    let body = rig
        .read("/api/v1/agents/search?q=translate%20this%20document%20into%20French&limit=3")
        .await;
    assert_eq!(body["items"][0]["id"], translator.as_str(), "{body}");
    let body = rig
        .read("/api/v1/agents/search?q=caption%20images%20and%20photos&limit=3")
        .await;
    assert_eq!(body["items"][0]["id"], painter.as_str(), "{body}");

    // Lineage of C1 at depth 3: exactly these nodes and edges.
    let view = rig
        .read(&format!("/api/v1/graph/tasks/{c1}/lineage?depth=3"))
        .await;
    let task = |id: &str| format!("Task:{id}");
    assert_eq!(view["root"], task(&c1));
    assert_eq!(view["groups"]["ancestors"], json!([task(&r)]));
    assert_eq!(view["groups"]["descendants"], json!([task(&g)]));
    assert_eq!(view["groups"]["dependencies"], json!([]));
    assert_eq!(view["groups"]["dependents"], json!([task(&d), task(&e)]));
    let mut nodes: Vec<String> = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect();
    nodes.sort();
    let mut expected = vec![task(&c1), task(&r), task(&g), task(&d), task(&e)];
    expected.sort();
    assert_eq!(nodes, expected);
    let mut edges: Vec<(String, String, String)> = view["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap_or_default().to_string(),
                e["rel"].as_str().unwrap_or_default().to_string(),
                e["to"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    edges.sort();
    let mut expected = vec![
        (task(&c1), "CHILD_OF".to_string(), task(&r)),
        (task(&g), "CHILD_OF".to_string(), task(&c1)),
        (task(&d), "DEPENDS_ON".to_string(), task(&c1)),
        (task(&e), "DEPENDS_ON".to_string(), task(&d)),
    ];
    expected.sort();
    assert_eq!(edges, expected);
    // Depth 1 stops at the first hop.
    let view = rig
        .read(&format!("/api/v1/graph/tasks/{c1}/lineage?depth=1"))
        .await;
    assert_eq!(view["groups"]["dependents"], json!([task(&d)]));
    // Lineage of D: dependencies C1, C2 and nothing above.
    let view = rig.read(&format!("/api/v1/graph/tasks/{d}/lineage")).await;
    let mut deps: Vec<String> =
        serde_json::from_value(view["groups"]["dependencies"].clone()).expect("list");
    deps.sort();
    let mut want = vec![task(&c1), task(&c2)];
    want.sort();
    assert_eq!(deps, want);
    assert_eq!(view["groups"]["ancestors"], json!([]));

    // Shortest path G → E: G -CHILD_OF-> C1 <-DEPENDS_ON- D <-DEPENDS_ON- E.
    let view = rig
        .read(&format!(
            "/api/v1/graph/path?from={}&to={}",
            task(&g),
            task(&e)
        ))
        .await;
    assert_eq!(
        view["groups"]["path"],
        json!([task(&g), task(&c1), task(&d), task(&e)])
    );
    assert_eq!(view["edges"].as_array().map(Vec::len), Some(3));
    // No path within one hop.
    let (status, _) = rig
        .get(&format!(
            "/api/v1/graph/path?from={}&to={}&max_depth=1",
            task(&g),
            task(&e)
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Neighborhood of the coder: its capabilities, its task; further out
    // the translator (shares text.classify) is a co-worker.
    let view = rig
        .read(&format!(
            "/api/v1/graph/agents/{coder}/neighborhood?depth=1"
        ))
        .await;
    assert_eq!(
        view["groups"]["capabilities"],
        json!(["Capability:code.test", "Capability:text.classify"])
    );
    assert_eq!(view["groups"]["tasks"], json!([task(&assigned)]));
    assert_eq!(view["groups"]["coworkers"], json!([]));
    let view = rig
        .read(&format!(
            "/api/v1/graph/agents/{coder}/neighborhood?depth=2&limit=1000"
        ))
        .await;
    let coworkers = view["groups"]["coworkers"].as_array().expect("coworkers");
    assert!(
        coworkers.contains(&json!(format!("Agent:{translator}"))),
        "{coworkers:?}"
    );
    assert!(!coworkers.contains(&json!(format!("Agent:{painter}"))));
    let small = rig
        .read(&format!(
            "/api/v1/graph/agents/{coder}/neighborhood?depth=2&limit=3"
        ))
        .await;
    assert_eq!(small["truncated"], true);
    assert!(small["nodes"].as_array().map(Vec::len).unwrap_or(99) <= 3);

    // Bad parameters are problem+json 4xx.
    for path in [
        "/api/v1/search/tasks".to_string(),
        "/api/v1/search/tasks?q=x&mode=fuzzy".into(),
        "/api/v1/search/tasks?q=x&limit=0".into(),
        "/api/v1/search/tasks?q=x&priority=12".into(),
        "/api/v1/search/tasks?q=x&bogus=1".into(),
        "/api/v1/search/tasks?q=x&status=sleeping".into(),
        "/api/v1/agents/search?q=".into(),
        "/api/v1/tasks/not-a-uuid/similar".into(),
        format!("/api/v1/graph/tasks/{c1}/lineage?depth=0"),
        format!("/api/v1/graph/tasks/{c1}/lineage?depth=abc"),
        format!("/api/v1/graph/agents/{coder}/neighborhood?depth=9"),
        "/api/v1/graph/path?from=Task:x&to=Task:y".into(),
        "/api/v1/graph/path?from=Planet:x&to=Task:y".into(),
        "/api/v1/graph/path?to=Actor:ops".into(),
    ] {
        let r = rig
            .http
            .get(format!("{}{path}", rig.query_url()))
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!((400..500).contains(&status), "{path}: {status}");
        assert_eq!(ct, "application/problem+json", "{path}");
    }
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = rig.get(&format!("/api/v1/tasks/{unknown}/similar")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = rig
        .get(&format!("/api/v1/graph/tasks/{unknown}/lineage"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let ready = rig.read("/health/ready").await;
    assert_eq!(ready["dependencies"]["vectors"]["status"], "up", "{ready}");
    assert_eq!(ready["dependencies"]["graph"]["status"], "up", "{ready}");

    // Re-delivery: every event a second time changes neither store.
    let mut ids: Vec<String> = kinds.keys().cloned().collect();
    ids.extend(needles.iter().map(|(id, _)| id.clone()));
    ids.extend([
        r.clone(),
        c1.clone(),
        c2.clone(),
        g.clone(),
        d.clone(),
        e.clone(),
    ]);
    let agents = [translator.clone(), coder.clone(), painter.clone()];
    redeliver_changes_nothing(&mut rig, &ids, &agents).await;
}

fn urlencode(s: &str) -> String {
    s.replace(' ', "%20").replace('\'', "%27")
}

/// Points (payload and dense vector) and the graph around the given ids.
async fn snapshot(rig: &Rig, tasks: &[String], agents: &[String]) -> (Vec<String>, Vec<String>) {
    let store: Arc<dyn VectorStore> = {
        let mut s = rig.query_config().search;
        s.vector_dir = rig.db.vector_dir();
        s.open_store().await.expect("open vector store")
    };
    let mut points = Vec::new();
    for (collection, ids) in [(Collection::Tasks, tasks), (Collection::Agents, agents)] {
        for id in ids {
            let p = store
                .get(collection, id.parse().expect("uuid"))
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("point {id} missing"));
            points.push(format!("{id} {:?} {:?}", Value::Object(p.payload), p.dense));
        }
        assert_eq!(
            store.count(collection).await.expect("count"),
            ids.len() as u64
        );
    }
    drop(store);
    let graph: Arc<dyn GraphStore> = match &rig.backends.neo4j_url {
        None => Arc::new(PgGraph::new(rig.db.pool().await)),
        Some(url) => Arc::new(
            projectors::graph::neo4j::Neo4jGraph::connect(
                url,
                "neo4j",
                &std::env::var("NEO4J_PASSWORD").unwrap_or_default(),
            )
            .await
            .expect("neo4j"),
        ),
    };
    let mut node_ids: Vec<String> = tasks.iter().map(|t| format!("Task:{t}")).collect();
    node_ids.extend(agents.iter().map(|a| format!("Agent:{a}")));
    let edges = graph
        .edges(&node_ids, &[], Direction::Both)
        .await
        .expect("edges");
    for e in &edges {
        node_ids.push(e.from.clone());
        node_ids.push(e.to.clone());
    }
    node_ids.sort();
    node_ids.dedup();
    let nodes = graph.nodes(&node_ids).await.expect("nodes");
    let mut lines: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    lines.extend(edges.iter().map(|e| format!("{e:?}")));
    lines.sort();
    (points, lines)
}

async fn redeliver_changes_nothing(rig: &mut Rig, tasks: &[String], agents: &[String]) {
    // Stop the process that holds Qdrant Edge before reading it.
    rig.query.take().expect("query").shutdown().await;
    rig.projectors.take().expect("projectors").shutdown().await;
    let before = snapshot(rig, tasks, agents).await;
    assert!(before.1.len() > tasks.len(), "graph has nodes and edges");

    // Back to the start of the stream for both projections.
    let pool = rig.db.pool().await;
    sqlx::query("UPDATE projector_checkpoints SET stream_sequence = 0 WHERE projection IN ('graph', 'vectors')")
        .execute(&pool)
        .await
        .expect("reset checkpoints");
    rig.start_projectors().await;
    rig.start_query().await;
    rig.caught_up().await;
    let vectors = rig.vector_status();
    let graph = rig.status("graph");
    let last = tests::stream_last_sequence(&rig.nats.url()).await;
    assert_eq!(
        vectors.applied.load(Ordering::Relaxed),
        0,
        "no vector write on re-delivery"
    );
    assert_eq!(
        vectors.skipped.load(Ordering::Relaxed),
        last,
        "every event seen again"
    );
    assert_eq!(
        graph.applied.load(Ordering::Relaxed),
        0,
        "no graph write on re-delivery"
    );
    assert_eq!(graph.skipped.load(Ordering::Relaxed), last);

    rig.query.take().expect("query").shutdown().await;
    let after = snapshot(rig, tasks, agents).await;
    assert_eq!(before.0, after.0, "vectors unchanged");
    assert_eq!(before.1, after.1, "graph unchanged");
    let _ = &rig.command;
}

/// A configured Qdrant server and Neo4j that cannot be reached: readiness
/// says so, and their endpoints answer 503 within the timeout (no hang),
/// while the rest of the API keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_stores_answer_503_and_show_in_readiness() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let pool = db.pool().await;
    projectors::migrator().run(&pool).await.expect("migrate");
    for (qdrant, neo4j) in [
        // A closed port answers at once; an unroutable address never does.
        ("http://127.0.0.1:9", "127.0.0.1:9"),
        ("http://10.255.255.1:6334", "10.255.255.1:7687"),
    ] {
        let mut c = query_config(&db, &nats);
        c.search.qdrant_url = Some(qdrant.into());
        c.search.search_timeout_ms = 500;
        c.graph.neo4j_url = Some(neo4j.into());
        let started = std::time::Instant::now();
        let query = start_query_with(c).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "start is bounded"
        );
        let base = format!("http://{}", query.addr);
        let http = Client::new();
        let id = uuid::Uuid::new_v4();
        for path in [
            "/api/v1/search/tasks?q=anything".to_string(),
            "/api/v1/agents/search?q=anything".into(),
            format!("/api/v1/tasks/{id}/similar"),
            format!("/api/v1/graph/tasks/{id}/lineage"),
            format!("/api/v1/graph/agents/{id}/neighborhood"),
            format!("/api/v1/graph/path?from=Task:{id}&to=Agent:{id}"),
        ] {
            let started = std::time::Instant::now();
            let r = http.get(format!("{base}{path}")).send().await.expect("get");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{path} answered in time"
            );
            assert_eq!(
                r.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{qdrant} {path}"
            );
            let body: Value = r.json().await.expect("problem");
            assert_eq!(body["code"], "unavailable", "{body}");
        }
        let r = http
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .expect("ready");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ready: Value = r.json().await.expect("json");
        assert_eq!(
            ready["dependencies"]["vectors"]["status"], "down",
            "{ready}"
        );
        assert_eq!(ready["dependencies"]["graph"]["status"], "down", "{ready}");
        assert_eq!(ready["dependencies"]["postgres"]["status"], "up", "{ready}");
        // The read models still answer.
        let r = http
            .get(format!("{base}/api/v1/tasks"))
            .send()
            .await
            .expect("list");
        assert_eq!(r.status(), StatusCode::OK);
        query.shutdown().await;
    }
}
