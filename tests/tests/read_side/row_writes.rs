//! The read models' typed-array writes keep every value as the event gave it
//! (quotes, backslashes, commas and braces in array elements and text, empty
//! arrays, nulls), and a batch applied at once ends as the same events applied
//! one at a time — or in two batches, the second updating a stored row and
//! inserting a new one in one statement, on the projectors' sessions (generic
//! plans forced). A history row that conflicts parks
//! its event (the plain insert's failure), and the rest of the batch applies.

use projectors::decode::decode;
use projectors::read_models::ReadModels;
use projectors::runtime::Projection;
use schemas::events::*;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tests::bench::envelope;
use tests::TestDb;
use uuid::Uuid;

fn submitted(caps: &[&str], depends_on: Vec<Uuid>, input: Value) -> TaskEvent {
    TaskEvent::TaskSubmitted(TaskSubmitted {
        task_type: "odd \"type\", with {braces}".into(),
        input,
        required_capabilities: caps.iter().map(|c| c.to_string()).collect(),
        priority: 3,
        target_agent_id: None,
        schedule_at: None,
        queue_timeout_secs: Some(30),
        execution_timeout_secs: None,
        max_retries: 2,
        idempotency_key: Some("key \\ with \"quotes\"".into()),
        parent_task_id: None,
        depends_on,
    })
}

/// Two tasks: one with odd capability strings and dependencies, run to a
/// failure; one with empty arrays, cancelled.
fn events() -> Vec<(Uuid, Vec<TaskEvent>)> {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let agent = Uuid::new_v4();
    vec![
        (
            a,
            vec![
                submitted(
                    &["a,b", "quote\"d", "back\\slash", "{brace}", "NULL", ""],
                    vec![b, Uuid::new_v4()],
                    json!({"text": "x", "nested": {"list": [1, "two", null]}}),
                ),
                TaskEvent::TaskQueued(TaskQueued { attempt: 1 }),
                TaskEvent::TaskAssigned(TaskAssigned {
                    agent_id: agent,
                    attempt: 1,
                    lease_expires_at: chrono::Utc::now(),
                }),
                TaskEvent::TaskFailed(TaskFailed {
                    agent_id: Some(agent),
                    attempt: 1,
                    error: "it \"broke\"\nbadly".into(),
                    retryable: false,
                }),
            ],
        ),
        (
            b,
            vec![
                submitted(&[], vec![], json!({})),
                TaskEvent::TaskCancelled(TaskCancelled {
                    agent_id: None,
                    reason: None,
                }),
            ],
        ),
    ]
}

/// The stored rows of both tables, as JSON, in key order.
async fn rows(conn: &mut PgConnection) -> (Vec<Value>, Vec<Value>) {
    let tasks: Vec<Value> =
        sqlx::query_scalar("SELECT to_jsonb(t) - 'search' FROM tasks t ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let history: Vec<Value> =
        sqlx::query_scalar("SELECT to_jsonb(e) FROM task_events e ORDER BY task_id, sequence")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    (tasks, history)
}

#[tokio::test]
async fn odd_values_survive_and_a_batch_equals_one_by_one() {
    let mut projected = Vec::new();
    let mut seq = 0;
    for (task, list) in events() {
        for (n, e) in list.iter().enumerate() {
            seq += 1;
            let body = envelope(task, n as i64 + 1, e, "tester");
            projected.push(decode(seq, &body).unwrap());
        }
    }

    let batched = TestDb::new().await;
    let pool = batched.pool().await;
    projectors::migrator().run(&pool).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    ReadModels.apply_batch(&mut tx, &projected).await.unwrap();
    tx.commit().await.unwrap();
    let (tasks, history) = rows(&mut conn).await;

    let single = TestDb::new().await;
    let pool1 = single.pool().await;
    projectors::migrator().run(&pool1).await.unwrap();
    let mut conn1 = pool1.acquire().await.unwrap();
    for e in &projected {
        ReadModels.apply(&mut conn1, e).await.unwrap();
    }
    assert_eq!(rows(&mut conn1).await, (tasks.clone(), history.clone()));

    // Task a's first two events, then the rest of a (its row stored) with all
    // of b (a new row).
    // On the projectors' own sessions: every statement runs its generic plan
    // from the first call.
    let split = TestDb::new().await;
    let mut config = projectors::config::Config::local();
    config.database_url = split.url.clone();
    let pool2 = projectors::connect_pool(&config).await.unwrap();
    let mut conn2 = pool2.acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&mut *conn2)
        .await
        .unwrap();
    assert_eq!(mode, "force_generic_plan");
    for part in [&projected[..2], &projected[2..]] {
        let mut tx = conn2.begin().await.unwrap();
        ReadModels.apply_batch(&mut tx, part).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(rows(&mut conn2).await, (tasks.clone(), history.clone()));

    assert_eq!(tasks.len(), 2);
    assert_eq!(history.len(), 6);
    let failed = tasks.iter().find(|t| t["status"] == "failed").unwrap();
    assert_eq!(
        failed["required_capabilities"],
        json!(["a,b", "quote\"d", "back\\slash", "{brace}", "NULL", ""])
    );
    assert_eq!(failed["depends_on"].as_array().unwrap().len(), 2);
    assert_eq!(failed["task_type"], "odd \"type\", with {braces}");
    assert_eq!(failed["idempotency_key"], "key \\ with \"quotes\"");
    assert_eq!(failed["error"], "it \"broke\"\nbadly");
    assert_eq!(
        failed["input"],
        json!({"text": "x", "nested": {"list": [1, "two", null]}})
    );
    assert_eq!(failed["failures"].as_array().unwrap().len(), 1);
    assert_eq!(failed["version"], 4);
    let cancelled = tasks.iter().find(|t| t["status"] == "cancelled").unwrap();
    assert_eq!(cancelled["required_capabilities"], json!([]));
    assert_eq!(cancelled["depends_on"], json!([]));
    assert_eq!(cancelled["output"], Value::Null);
    assert_eq!(cancelled["cancel_reason"], Value::Null);
    assert_eq!(cancelled["input"], json!({}));
}

/// A history row already stored for an event the task row does not have (a
/// read model out of step with itself) is not skipped: the batch's plain
/// insert fails, the batch re-runs event by event, and that task's events
/// are parked with the database's reason while the other task applies.
#[tokio::test]
async fn a_conflicting_history_row_parks_its_event_and_the_rest_applies() {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    projectors::migrator().run(&pool).await.unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut messages = Vec::new();
    for task in [a, b] {
        let subject = schemas::subjects::event_subject(schemas::subjects::TASK, &task.to_string());
        let events = [
            submitted(&["x"], vec![], json!({"text": "t"})),
            TaskEvent::TaskQueued(TaskQueued { attempt: 1 }),
        ];
        for (n, e) in events.iter().enumerate() {
            let seq = messages.len() as u64 + 1;
            let body = envelope(task, n as i64 + 1, e, "tester");
            messages.push((
                seq,
                subject.clone(),
                async_nats::HeaderMap::new(),
                bytes::Bytes::from(body),
            ));
        }
    }
    sqlx::query(
        "INSERT INTO task_events (task_id, sequence, stream_sequence, event_id, event_type, \
             occurred_at, actor, correlation_id, causation_id, request_id, payload) \
         VALUES ($1, 1, 0, gen_random_uuid(), 'TaskSubmitted', now(), 'x', 'x', 'x', 'x', '{}')",
    )
    .bind(a)
    .execute(&pool)
    .await
    .unwrap();

    let outcome = projectors::runtime::process_batch(&pool, &ReadModels, 1, &messages)
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.parked), (2, 2), "{outcome:?}");
    let versions: Vec<(Uuid, i64)> = sqlx::query_as("SELECT id, version FROM tasks")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(versions, vec![(b, 2)]);
    let parked: Vec<String> = sqlx::query_scalar(
        "SELECT error FROM dead_letters WHERE aggregate_id = $1 AND status = 'parked' ORDER BY id",
    )
    .bind(a.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert!(parked[0].contains("duplicate key"), "{parked:?}");
}
