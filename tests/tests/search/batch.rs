//! The vector projection applies a batch as it applies its events one by
//! one: the same points, payloads and vectors; and a batch refused part-way
//! writes nothing.

use projectors::decode::{decode, ProjectedEvent};
use projectors::runtime::{Applied, Projection};
use projectors::search::vectors::Collection;
use projectors::search::{Search, VectorProjection};
use schemas::events::{
    TaskAssigned, TaskEvent, TaskQueued, TaskStarted, TaskSubmitted, TaskSucceeded,
};
use serde_json::json;
use tests::TestDb;
use uuid::Uuid;

async fn open(dir: std::path::PathBuf) -> Search {
    // The query service's defaults, as it opens its own vector store.
    let mut settings = query_service::Config::local().search;
    settings.vector_dir = dir;
    Search::open(&settings).await.expect("open Qdrant Edge")
}

fn submitted(i: usize) -> TaskEvent {
    TaskEvent::TaskSubmitted(TaskSubmitted {
        task_type: format!("kind.{i}"),
        input: json!({"text": format!("task {i} about invoices and quarterly reports")}),
        required_capabilities: vec!["echo".into()],
        priority: 3,
        target_agent_id: None,
        schedule_at: None,
        queue_timeout_secs: None,
        execution_timeout_secs: None,
        max_retries: 3,
        idempotency_key: None,
        parent_task_id: None,
        depends_on: vec![],
    })
}

/// Each task's events in order: submitted, queued, assigned, started and
/// (for every other task) succeeded with an output, which changes the text.
fn lifecycle(i: usize, agent: Uuid) -> Vec<TaskEvent> {
    let mut events = vec![
        submitted(i),
        TaskEvent::TaskQueued(TaskQueued { attempt: 1 }),
        TaskEvent::TaskAssigned(TaskAssigned {
            agent_id: agent,
            attempt: 1,
            lease_expires_at: chrono::Utc::now(),
        }),
        TaskEvent::TaskStarted(TaskStarted {
            agent_id: agent,
            attempt: 1,
        }),
    ];
    if i.is_multiple_of(2) {
        events.push(TaskEvent::TaskSucceeded(TaskSucceeded {
            agent_id: agent,
            attempt: 1,
            output: json!({"text": format!("summary of report {i}")}),
        }));
    }
    events
}

fn projected(seq: u64, task: Uuid, sequence: i64, event: &TaskEvent) -> ProjectedEvent {
    decode(seq, &tests::bench::envelope(task, sequence, event, "user")).expect("decode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_writes_the_points_its_events_one_by_one_write() {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    let mut conn = pool.acquire().await.expect("connection");
    let batched = open(db.vector_dir().join("batched")).await;
    let single = open(db.vector_dir().join("single")).await;
    let agent = Uuid::new_v4();

    // Four tasks, their events interleaved as the stream would carry them,
    // and the first task's queued event delivered twice.
    let tasks: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let lifecycles: Vec<Vec<TaskEvent>> = (0..4).map(|i| lifecycle(i, agent)).collect();
    let mut events = Vec::new();
    let mut seq = 0;
    for step in 0..5 {
        for (t, life) in tasks.iter().zip(&lifecycles) {
            if let Some(e) = life.get(step) {
                seq += 1;
                events.push(projected(seq, *t, step as i64 + 1, e));
            }
        }
        if step == 1 {
            seq += 1;
            events.push(projected(seq, tasks[0], 2, &lifecycles[0][1]));
        }
    }

    let by_batch = VectorProjection::new(batched.clone())
        .apply_batch(&mut conn, &events)
        .await
        .expect("batch");
    let one_by_one = VectorProjection::new(single.clone());
    let mut by_event = Vec::new();
    for e in &events {
        by_event.push(one_by_one.apply(&mut conn, e).await.expect("event"));
    }
    assert_eq!(by_batch, by_event);
    assert_eq!(
        by_batch.iter().filter(|a| **a == Applied::Skipped).count(),
        1,
        "the redelivered event is skipped"
    );
    for t in &tasks {
        let a = batched.store.get(Collection::Tasks, *t).await.expect("get");
        let b = single.store.get(Collection::Tasks, *t).await.expect("get");
        let (a, b) = (a.expect("batched point"), b.expect("single point"));
        assert_eq!(a.payload, b.payload, "payload of {t}");
        assert_eq!(a.dense, b.dense, "vectors of {t}");
        assert!(a.dense.is_some(), "{t} has vectors");
    }
    let first = batched
        .store
        .get(Collection::Tasks, tasks[0])
        .await
        .expect("get")
        .expect("point");
    assert_eq!(first.payload["status"], "succeeded");
    assert_eq!(first.payload["seq"], 5);

    // A batch whose second task has a gap: refused, and the first task's
    // point (new in the same batch) is not written either.
    let (fresh, gapped) = (Uuid::new_v4(), Uuid::new_v4());
    let refused = vec![
        projected(100, fresh, 1, &submitted(10)),
        projected(101, gapped, 1, &submitted(11)),
        projected(
            102,
            gapped,
            3,
            &TaskEvent::TaskAssigned(TaskAssigned {
                agent_id: agent,
                attempt: 1,
                lease_expires_at: chrono::Utc::now(),
            }),
        ),
    ];
    let err = VectorProjection::new(batched.clone())
        .apply_batch(&mut conn, &refused)
        .await
        .expect_err("a gap is refused");
    assert!(
        err.to_string().contains("arrived but the point is at 1"),
        "{err}"
    );
    for id in [fresh, gapped] {
        assert!(
            batched
                .store
                .get(Collection::Tasks, id)
                .await
                .expect("get")
                .is_none(),
            "nothing written for {id}"
        );
    }
}
