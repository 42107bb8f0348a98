//! Poison events are parked with their error, later events of the same
//! aggregate wait behind them, other aggregates flow, and a re-drive after
//! the fix applies them in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use projectors::dead_letters;
use projectors::decode::{DomainEvent, ProjectedEvent};
use projectors::read_models::ReadModels;
use projectors::runtime::{Applied, ApplyError, Projection};
use schemas::TaskEvent;
use serde_json::json;
use sqlx::PgConnection;
use tests::*;

use crate::support::Apis;

async fn task_status(pool: &sqlx::PgPool, id: &str) -> (String, i64) {
    sqlx::query_as("SELECT status, version FROM tasks WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn parked_for(pool: &sqlx::PgPool, id: &str) -> Vec<(i64, String, Option<i64>, i32)> {
    sqlx::query_as(
        "SELECT id, error, blocked_by, attempts FROM dead_letters \
         WHERE aggregate_id = $1 AND status = 'parked' AND projection = 'read_models' ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn undecodable_and_unknown_events_are_parked_and_later_ones_wait_behind_them() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let js = async_nats::jetstream::new(async_nats::connect(sys.nats.url()).await.unwrap());
    let (garbled, _) = api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;
    let (unknown, _) = api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;
    sys.caught_up().await;

    // Poison 1: a body that is not an envelope at all.
    js.publish(format!("sutazai.events.task.{garbled}"), "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Poison 2: a well-formed envelope of an event type nobody knows.
    let envelope = json!({
        "event_id": uuid::Uuid::new_v4(), "aggregate_type": "task", "aggregate_id": unknown,
        "sequence": 3, "event_type": "TaskFrobnicated", "event_version": "1.0",
        "occurred_at": "2026-11-25T12:00:00Z",
        "metadata": {"actor": "x", "correlation_id": "c", "causation_id": "k", "request_id": "r"},
        "payload": {"TaskFrobnicated": {}}
    });
    js.publish(
        format!("sutazai.events.task.{unknown}"),
        envelope.to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // Real events of both aggregates after the poison, and another aggregate.
    api.cmd(
        &format!("/api/v1/tasks/{garbled}/cancel"),
        json!({"reason": "r1"}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{unknown}/cancel"),
        json!({"reason": "r2"}),
    )
    .await;
    let (other, other_v) = api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;
    let visible = api
        .read(&format!("/api/v1/tasks/{other}?min_version={other_v}"))
        .await;
    assert_eq!(visible["status"], "queued", "other aggregates keep flowing");
    sys.caught_up().await;

    for (id, error_part) in [
        (&garbled, "not an event envelope"),
        (&unknown, "TaskFrobnicated"),
    ] {
        let parked = parked_for(&sys.pool, id).await;
        assert_eq!(parked.len(), 2, "{id}: the poison and the event behind it");
        assert!(parked[0].1.contains(error_part), "{}", parked[0].1);
        assert_eq!(parked[0].2, None);
        assert_eq!(parked[1].2, Some(parked[0].0), "parked behind the poison");
        assert_eq!(task_status(&sys.pool, id).await, ("queued".to_string(), 2));
        // Every projection parks what it cannot apply, each on its own.
        for other in ["graph", "vectors"] {
            let pool = sys.pool.clone();
            let id = id.to_string();
            tests::wait_until(
                std::time::Duration::from_secs(20),
                &format!("{other} to park the poison and the event behind it"),
                || {
                    let (pool, id) = (pool.clone(), id.clone());
                    async move {
                        let n: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM dead_letters \
                             WHERE aggregate_id = $1 AND projection = $2 AND status = 'parked'",
                        )
                        .bind(&id)
                        .bind(other)
                        .fetch_one(&pool)
                        .await
                        .unwrap_or(0);
                        n == 2
                    }
                },
            )
            .await;
        }
    }
    let metrics = reqwest::get(format!("http://{}/metrics", sys.projectors.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sutazai_projector_dead_letters{projection=\"read_models\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sutazai_projector_lag{projection=\"read_models\"} 0"),
        "{metrics}"
    );

    // The fix for a message that is not a real event is to discard it, with
    // a reason; then the re-drive applies what waited behind it, in order.
    for id in [&garbled, &unknown] {
        let poison = parked_for(&sys.pool, id).await[0].0;
        assert!(dead_letters::discard(&sys.pool, poison, "not a real event")
            .await
            .unwrap());
    }
    let report = dead_letters::redrive(&sys.pool, &ReadModels, None, 3)
        .await
        .unwrap();
    assert_eq!((report.applied, report.still_parked), (2, 0));
    for id in [&garbled, &unknown] {
        assert_eq!(
            task_status(&sys.pool, id).await,
            ("cancelled".to_string(), 3)
        );
        assert!(parked_for(&sys.pool, id).await.is_empty());
    }
    let discarded: Vec<String> =
        sqlx::query_scalar("SELECT resolution FROM dead_letters WHERE status = 'discarded' AND projection = 'read_models'")
            .fetch_all(&sys.pool)
            .await
            .unwrap();
    assert_eq!(discarded, ["not a real event", "not a real event"]);
    sys.stop().await;
}

/// The read models with a bug: applying TaskStarted fails while `broken`.
struct Buggy {
    broken: AtomicBool,
}

#[async_trait]
impl Projection for Buggy {
    fn name(&self) -> &str {
        ReadModels.name()
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &ProjectedEvent,
    ) -> Result<Applied, ApplyError> {
        if self.broken.load(Ordering::SeqCst)
            && matches!(event.event, DomainEvent::Task(TaskEvent::TaskStarted(_)))
        {
            return Err(ApplyError::Rejected("bug: cannot apply TaskStarted".into()));
        }
        ReadModels.apply(conn, event).await
    }
}

#[tokio::test]
async fn a_failing_apply_is_retried_then_parked_and_redriven_in_order_after_the_fix() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let command = start_service(config(&db, &nats)).await;
    let buggy = Arc::new(Buggy {
        broken: AtomicBool::new(true),
    });
    let projectors = start_projectors(&projectors_config(&db, &nats), vec![buggy.clone()]).await;
    let query = start_query(&db, &nats).await;
    let api = Apis {
        command: format!("http://{}", command.addr),
        query: format!("http://{}", query.addr),
        http: reqwest::Client::new(),
    };
    let pool = db.pool().await;

    let agent = api.agent("w", "worker", &[]).await;
    let (task, _) = api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;
    api.cmd(
        &format!("/api/v1/tasks/{task}/assign"),
        json!({"agent_id": agent}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{task}/start"),
        json!({"agent_id": agent}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{task}/progress"),
        json!({"agent_id": agent, "percent": 50}),
    )
    .await;
    api.cmd(
        &format!("/api/v1/tasks/{task}/complete"),
        json!({"agent_id": agent, "output": {"ok": 1}}),
    )
    .await;
    let (other, other_v) = api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;
    assert_eq!(
        api.read(&format!("/api/v1/tasks/{other}?min_version={other_v}"))
            .await["status"],
        "queued"
    );

    wait_until(
        std::time::Duration::from_secs(10),
        "three parked events",
        || async { parked_for(&pool, &task).await.len() == 3 },
    )
    .await;
    let parked = parked_for(&pool, &task).await;
    assert!(parked[0].1.contains("bug: cannot apply TaskStarted"));
    assert_eq!(parked[0].3, 3, "retried a bounded number of times");
    assert!(parked[1..].iter().all(|p| p.2 == Some(parked[0].0)));
    assert_eq!(task_status(&pool, &task).await, ("assigned".to_string(), 3));

    // Re-driving while the bug is still there changes nothing.
    let report = dead_letters::redrive(&pool, buggy.as_ref(), Some(&task), 3)
        .await
        .unwrap();
    assert_eq!((report.applied, report.still_parked), (0, 3));
    assert_eq!(task_status(&pool, &task).await, ("assigned".to_string(), 3));

    buggy.broken.store(false, Ordering::SeqCst);
    let report = dead_letters::redrive(&pool, buggy.as_ref(), Some(&task), 3)
        .await
        .unwrap();
    assert_eq!((report.applied, report.still_parked), (3, 0));
    let view = api
        .read(&format!("/api/v1/tasks/{task}?min_version=6"))
        .await;
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["output"], json!({"ok": 1}));
    let history = api.read(&format!("/api/v1/tasks/{task}/events")).await;
    let seqs: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);

    // Later events of the aggregate flow normally again.
    let (_, v) = api
        .cmd(&format!("/api/v1/tasks/{other}/cancel"), json!({}))
        .await;
    assert_eq!(
        api.read(&format!("/api/v1/tasks/{other}?min_version={v}"))
            .await["status"],
        "cancelled"
    );
    query.shutdown().await;
    projectors.shutdown().await;
    command.shutdown().await.unwrap();
}
