//! Crash safety: a projector killed mid-batch and restarted ends with read
//! models identical to one that ran uninterrupted; a duplicate changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use projectors::decode::ProjectedEvent;
use projectors::read_models::ReadModels;
use projectors::runtime::{Applied, ApplyError, Projection};
use serde_json::json;
use sqlx::PgConnection;
use tests::*;
use tokio::sync::Notify;

use crate::support::Apis;

/// The real read models, except that the `stall_at`-th apply never returns:
/// the process can then be killed with a batch half applied.
struct StallingReadModels {
    applies: AtomicU64,
    stall_at: u64,
    stalled: Arc<Notify>,
}

#[async_trait]
impl Projection for StallingReadModels {
    fn name(&self) -> &str {
        ReadModels.name()
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &ProjectedEvent,
    ) -> Result<Applied, ApplyError> {
        let n = self.applies.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.stall_at {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        ReadModels.apply(conn, event).await
    }
}

/// The read models' checkpoint (the other projections', which run beside
/// them after the restart, may be ahead and say nothing about these tables).
async fn checkpoint_of(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(stream_sequence), 0) FROM projector_checkpoints WHERE projection = $1",
    )
    .bind(ReadModels.name())
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_checkpoint(pool: &sqlx::PgPool, target: u64) {
    wait_until(
        Duration::from_secs(30),
        "projection to reach the stream end",
        || async { checkpoint_of(pool).await as u64 >= target },
    )
    .await;
}

#[tokio::test]
async fn a_projector_killed_mid_batch_ends_equal_to_an_uninterrupted_one() {
    let sys = System::start().await; // its projectors run uninterrupted on sys.db
    let api = Apis::new(&sys);
    let agent = api.agent("w", "worker", &["echo"]).await;
    for i in 0..60 {
        let (t, _) = api
            .cmd(
                "/api/v1/tasks",
                json!({"task_type": "echo", "input": {"text": format!("job {i}")}}),
            )
            .await;
        match i % 3 {
            0 => {
                api.cmd(
                    &format!("/api/v1/tasks/{t}/assign"),
                    json!({"agent_id": agent}),
                )
                .await;
                api.cmd(
                    &format!("/api/v1/tasks/{t}/start"),
                    json!({"agent_id": agent}),
                )
                .await;
                api.cmd(
                    &format!("/api/v1/tasks/{t}/complete"),
                    json!({"agent_id": agent, "output": {"i": i}}),
                )
                .await;
            }
            1 => {
                api.cmd(&format!("/api/v1/tasks/{t}/cancel"), json!({}))
                    .await;
            }
            _ => {}
        }
    }
    sys.caught_up().await;
    let last = stream_last_sequence(&sys.nats.url()).await;
    assert!(last > 200, "{last} events");

    // A second copy of the read models in another database, killed mid-batch.
    let copy = TestDb::new().await;
    let mut cfg = projectors_config(&copy, &sys.nats);
    cfg.consumer_prefix = "copy".into();
    cfg.batch_size = 50;
    let stalled = Arc::new(Notify::new());
    let stalling = Arc::new(StallingReadModels {
        applies: AtomicU64::new(0),
        stall_at: 130,
        stalled: stalled.clone(),
    });
    let doomed = start_projectors(&cfg, vec![stalling]).await;
    tokio::time::timeout(Duration::from_secs(30), stalled.notified())
        .await
        .expect("the projector reached the stall");
    doomed.abort().await;
    let copy_pool = copy.pool().await;
    let cp = checkpoint_of(&copy_pool).await;
    assert!(
        cp > 0 && cp < 130,
        "whole batches committed, the stalled one not: checkpoint {cp}"
    );

    let restarted = start_projectors(&cfg, projectors::all_projections()).await;
    wait_checkpoint(&copy_pool, last).await;
    assert_eq!(
        dump_read_models(&copy_pool).await,
        dump_read_models(&sys.pool).await
    );

    // A duplicate on the stream (a re-publish past the de-duplication
    // window: a new stream position, the same event) changes nothing.
    let client = async_nats::connect(sys.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(schemas::subjects::DEFAULT_STREAM)
        .await
        .unwrap();
    for seq in [5, 40, 77] {
        let m = stream.get_raw_message(seq).await.unwrap();
        js.publish(m.subject.to_string(), m.payload.clone())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let last = stream_last_sequence(&sys.nats.url()).await;
    wait_checkpoint(&copy_pool, last).await;
    wait_checkpoint(&sys.pool, last).await;
    let before = dump_read_models(&sys.pool).await;
    assert_eq!(dump_read_models(&copy_pool).await, before);
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&copy_pool)
        .await
        .unwrap();
    assert_eq!(parked, 0);
    restarted.shutdown().await;
    sys.stop().await;
}
