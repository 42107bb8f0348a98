//! The coordinator's view ends the same whether a batch of events is folded
//! at once or one event at a time — with a group commit's interleaving, where
//! one task's `TaskQueued` follows other tasks' submissions, and with
//! queueings whose submissions came in an earlier batch.

use schemas::events::*;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tests::bench::envelope;
use tests::TestDb;
use uuid::Uuid;

fn submitted(depends_on: Vec<Uuid>) -> TaskEvent {
    TaskEvent::TaskSubmitted(TaskSubmitted {
        task_type: "echo".into(),
        input: json!({"text": "x"}),
        required_capabilities: vec!["echo".into()],
        priority: 2,
        target_agent_id: None,
        schedule_at: None,
        queue_timeout_secs: Some(30),
        execution_timeout_secs: None,
        max_retries: 1,
        idempotency_key: None,
        parent_task_id: None,
        depends_on,
    })
}

fn queued() -> TaskEvent {
    TaskEvent::TaskQueued(TaskQueued { attempt: 1 })
}

async fn view(conn: &mut PgConnection) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(c) FROM coord_tasks c ORDER BY task_id")
        .fetch_all(conn)
        .await
        .unwrap()
}

async fn fresh_view() -> (TestDb, PgConnection) {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    command_service::migrator().run(&pool).await.unwrap();
    let conn = pool.acquire().await.unwrap().detach();
    (db, conn)
}

#[tokio::test]
async fn a_batch_folds_into_the_view_as_its_events_one_by_one() {
    let [a, b, c, d, e, f] = [0; 6].map(|_| Uuid::new_v4());
    // e and f were submitted in an earlier batch, and their queueings open
    // this one; a and b as a group commit may write them (both submissions,
    // then both queueings); c waits on a dependency and is cancelled; d's
    // queueing follows its submission directly.
    let earlier: Vec<(Uuid, i64, TaskEvent)> =
        vec![(e, 1, submitted(vec![])), (f, 1, submitted(vec![]))];
    let order: Vec<(Uuid, i64, TaskEvent)> = vec![
        (e, 2, queued()),
        (f, 2, queued()),
        (a, 1, submitted(vec![])),
        (b, 1, submitted(vec![])),
        (a, 2, queued()),
        (b, 2, queued()),
        (c, 1, submitted(vec![Uuid::new_v4()])),
        (
            c,
            2,
            TaskEvent::TaskCancelled(TaskCancelled {
                agent_id: None,
                reason: None,
            }),
        ),
        (d, 1, submitted(vec![])),
        (d, 2, queued()),
    ];
    let decode = |list: &[(Uuid, i64, TaskEvent)]| -> Vec<_> {
        list.iter()
            .map(|(task, seq, e)| {
                schemas::decode::decode(&envelope(*task, *seq, e, "tester")).unwrap()
            })
            .collect()
    };
    let (earlier, events) = (decode(&earlier), decode(&order));

    let (_batched_db, mut batched) = fresh_view().await;
    command_service::coordinator::apply_events(&mut batched, &earlier)
        .await
        .unwrap();
    let mut tx = batched.begin().await.unwrap();
    command_service::coordinator::apply_events(&mut tx, &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let (_single_db, mut single) = fresh_view().await;
    for e in earlier.iter().chain(&events) {
        command_service::coordinator::apply_events(&mut single, std::slice::from_ref(e))
            .await
            .unwrap();
    }
    let rows = view(&mut batched).await;
    assert_eq!(rows, view(&mut single).await);

    let status = |id: Uuid| {
        rows.iter()
            .find(|r| r["task_id"] == id.to_string())
            .map(|r| (r["status"].clone(), r["version"].clone()))
    };
    assert_eq!(status(a), Some((json!("queued"), json!(2))));
    assert_eq!(status(b), Some((json!("queued"), json!(2))));
    assert_eq!(status(c), Some((json!("cancelled"), json!(2))));
    assert_eq!(status(d), Some((json!("queued"), json!(2))));
    assert_eq!(status(e), Some((json!("queued"), json!(2))));
    assert_eq!(status(f), Some((json!("queued"), json!(2))));
    assert!(rows
        .iter()
        .all(|r| r["queued_at"] != Value::Null || r["status"] == "cancelled"));
}
