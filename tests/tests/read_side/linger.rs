//! A projection that lingers (`Projection::linger`): under a burst its
//! batches start at least the linger apart and so gather the events that
//! arrived meanwhile; after a quiet spell an event is applied at once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use projectors::decode::ProjectedEvent;
use projectors::runtime::{Applied, ApplyError, Projection};
use serde_json::json;
use sqlx::PgConnection;
use tests::*;

use crate::support::{projection_status, Apis};

const NAME: &str = "lingering";
const LINGER: Duration = Duration::from_secs(2);

/// Records when each batch was handed over and how many events it held.
#[derive(Default)]
struct Lingering {
    batches: Mutex<Vec<(Instant, usize)>>,
}

#[async_trait]
impl Projection for Lingering {
    fn name(&self) -> &str {
        NAME
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &ProjectedEvent,
    ) -> Result<Applied, ApplyError> {
        let applied = self.apply_batch(conn, std::slice::from_ref(event)).await?;
        Ok(applied[0])
    }

    async fn apply_batch(
        &self,
        _conn: &mut PgConnection,
        events: &[ProjectedEvent],
    ) -> Result<Vec<Applied>, ApplyError> {
        self.batches
            .lock()
            .unwrap()
            .push((Instant::now(), events.len()));
        Ok(vec![Applied::Applied; events.len()])
    }

    fn linger(&self) -> Duration {
        LINGER
    }
}

#[tokio::test]
async fn a_lingering_projection_gathers_a_burst_and_applies_a_lone_event_at_once() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let command = start_service(config(&db, &nats)).await;
    let api = Apis::commands(&command);
    let projection = Arc::new(Lingering::default());
    let projectors =
        start_projectors(&projectors_config(&db, &nats), vec![projection.clone()]).await;
    let status = projection_status(&projectors, NAME);

    // A burst: 20 tasks (40 events), one after another.
    let burst = Instant::now();
    for _ in 0..20 {
        api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;
    }
    let burst_took = burst.elapsed();
    wait_until(Duration::from_secs(20), "the burst applied", || async {
        status.applied.load(Ordering::SeqCst) == 40
    })
    .await;
    let batches = projection.batches.lock().unwrap().clone();
    for pair in batches.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= LINGER - Duration::from_millis(100),
            "batches {gap:?} apart with a linger of {LINGER:?}: {batches:?}"
        );
    }
    // The first event goes at once, the rest wait for the linger: at most
    // one batch per linger over the burst, and one after it.
    let most = 2 + (burst_took.as_secs_f64() / LINGER.as_secs_f64()).floor() as usize;
    assert!(
        batches.len() <= most,
        "{} batches for a burst of {burst_took:?}: {batches:?}",
        batches.len()
    );
    assert_eq!(batches.iter().map(|b| b.1).sum::<usize>(), 40);

    // Quiet for longer than the linger: a lone task's events are applied
    // without waiting for it.
    tokio::time::sleep(LINGER + Duration::from_millis(500)).await;
    let submitted = Instant::now();
    api.cmd("/api/v1/tasks", json!({"task_type": "echo"})).await;
    wait_until(Duration::from_secs(20), "the lone task applied", || async {
        status.applied.load(Ordering::SeqCst) == 42
    })
    .await;
    let first_after = projection.batches.lock().unwrap()[batches.len()].0;
    assert!(
        first_after - submitted < LINGER / 2,
        "a lone event waited {:?} (linger {LINGER:?})",
        first_after - submitted
    );
    projectors.shutdown().await;
    command.shutdown().await.unwrap();
}
