//! A projection that puts its flush off (`Projection::flush_every`): its
//! batches commit without flushing or storing the checkpoint, which follow
//! when the stream goes quiet (or at shutdown), and at once with a parked
//! event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use projectors::decode::{DomainEvent, ProjectedEvent};
use projectors::runtime::{Applied, ApplyError, Projection};
use schemas::TaskEvent;
use serde_json::json;
use sqlx::PgConnection;
use tests::*;

use crate::support::{projection_status, Apis};

const NAME: &str = "deferring";

/// Keeps each task's last applied sequence in memory ("the store"); counts
/// flushes; cannot apply a cancellation.
#[derive(Default)]
struct Deferring {
    applied: Mutex<HashMap<String, i64>>,
    flushes: AtomicU64,
}

#[async_trait]
impl Projection for Deferring {
    fn name(&self) -> &str {
        NAME
    }

    async fn apply(
        &self,
        _conn: &mut PgConnection,
        event: &ProjectedEvent,
    ) -> Result<Applied, ApplyError> {
        if matches!(event.event, DomainEvent::Task(TaskEvent::TaskCancelled(_))) {
            return Err(ApplyError::Rejected("cannot apply a cancellation".into()));
        }
        let mut applied = self.applied.lock().unwrap();
        let last = applied
            .entry(event.envelope.aggregate_id.clone())
            .or_default();
        if event.envelope.sequence <= *last {
            return Ok(Applied::Skipped);
        }
        *last = event.envelope.sequence;
        Ok(Applied::Applied)
    }

    async fn flush(&self) -> Result<(), ApplyError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn flush_every(&self) -> Option<Duration> {
        // Longer than the test: only a quiet stream, a parked event or the
        // shutdown flushes.
        Some(Duration::from_secs(3600))
    }
}

async fn stored_checkpoint(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT stream_sequence FROM projector_checkpoints WHERE projection = $1")
        .bind(NAME)
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_deferring_projection_checkpoints_when_quiet_and_together_with_a_dead_letter() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let command = start_service(config(&db, &nats)).await;
    let api = Apis::commands(&command);
    let pool = db.pool().await;
    // The stream holds 40 events (20 tasks, submitted and queued) before
    // the projection starts, so that it reads them in several batches.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        tasks.push(
            api.cmd("/api/v1/tasks", json!({"task_type": "echo"}))
                .await
                .0,
        );
    }
    wait_until(Duration::from_secs(10), "the outbox to drain", || {
        outbox_empty(&pool)
    })
    .await;
    let last = stream_last_sequence(&nats.url()).await;
    assert_eq!(last, 40);

    let projection = Arc::new(Deferring::default());
    let mut config = projectors_config(&db, &nats);
    config.batch_size = 7;
    let projectors = start_projectors(&config, vec![projection.clone()]).await;
    let status = projection_status(&projectors, NAME);

    // Once the stream is quiet the checkpoint is stored, after one flush
    // for all the batches.
    wait_until(
        Duration::from_secs(10),
        "the checkpoint at the end",
        || async { stored_checkpoint(&pool).await == last as i64 },
    )
    .await;
    assert_eq!(status.applied.load(Ordering::SeqCst), 40);
    let batches = status.batches.load(Ordering::SeqCst);
    let flushes = projection.flushes.load(Ordering::SeqCst);
    assert!(batches >= 6, "40 events in batches of at most 7: {batches}");
    assert!(
        flushes >= 1 && flushes < batches,
        "{flushes} flushes for {batches} batches"
    );
    assert_eq!(status.checkpoint.load(Ordering::SeqCst), last);

    // A parked event commits with the checkpoint past it (one transaction):
    // whenever the dead letter is visible, so is the checkpoint.
    api.cmd(&format!("/api/v1/tasks/{}/cancel", tasks[0]), json!({}))
        .await;
    let parked_at = loop {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT d.stream_sequence, \
                    (SELECT stream_sequence FROM projector_checkpoints WHERE projection = $1) \
             FROM dead_letters d WHERE d.projection = $1",
        )
        .bind(NAME)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some((parked, checkpoint)) = row {
            assert!(
                checkpoint >= parked,
                "dead letter at {parked} visible with the checkpoint at {checkpoint}"
            );
            break parked;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(parked_at, 41);

    // A later event: flushed and checkpointed when the stream is quiet or,
    // at the latest, on the way out.
    api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;
    wait_until(Duration::from_secs(10), "the new task applied", || async {
        status.applied.load(Ordering::SeqCst) == 42
    })
    .await;
    let flushes = projection.flushes.load(Ordering::SeqCst);
    projectors.shutdown().await;
    assert_eq!(stored_checkpoint(&pool).await, 43);
    assert!(projection.flushes.load(Ordering::SeqCst) > flushes);
    command.shutdown().await.unwrap();
}
