//! The group committer: commands that share a transaction still get their own
//! answers. A batch in which one command's optimistic lock fails is rolled
//! back and every command runs again alone, so the others commit and only
//! that one is refused — nothing half written.

use command_service::commit::GroupCommitter;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use domain::Task;
use serde_json::json;
use tests::*;

fn event(aggregate_id: &str, sequence: usize) -> SerializedEvent {
    SerializedEvent::new(
        aggregate_id.into(),
        sequence,
        "task".into(),
        "TaskQueued".into(),
        "1.0".into(),
        json!({"TaskQueued": {"attempt": sequence}}),
        json!({"actor": "test"}),
    )
}

// One runtime thread: the three persists queue their jobs before the
// committer task runs, so they reach it as one batch.
#[tokio::test(flavor = "current_thread")]
async fn a_conflict_in_a_batch_refuses_only_that_command() {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    command_service::migrator().run(&pool).await.unwrap();
    let repo = GroupCommitter::start(pool.clone()).repository();

    let (a, rival_a, b) = (
        [event("a", 1), event("a", 2)],
        [event("a", 1)],
        [event("b", 1)],
    );
    let (first, rival, other) = tokio::join!(
        repo.persist::<Task>(&a, None),
        repo.persist::<Task>(&rival_a, None),
        repo.persist::<Task>(&b, None),
    );
    assert!(first.is_ok(), "{first:?}");
    assert!(
        matches!(rival, Err(PersistenceError::OptimisticLockError)),
        "{rival:?}"
    );
    assert!(other.is_ok(), "{other:?}");

    let stored: Vec<(String, i64)> =
        sqlx::query_as("SELECT aggregate_id, sequence FROM events ORDER BY aggregate_id, sequence")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        [
            ("a".to_string(), 1),
            ("a".to_string(), 2),
            ("b".to_string(), 1)
        ]
    );
    assert_eq!(
        outbox_len(&pool).await,
        3,
        "one outbox row per stored event"
    );
}

#[tokio::test]
async fn a_lone_conflicting_command_is_refused_and_later_ones_commit() {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    command_service::migrator().run(&pool).await.unwrap();
    let repo = GroupCommitter::start(pool.clone()).repository();

    repo.persist::<Task>(&[event("a", 1)], None).await.unwrap();
    let again = repo.persist::<Task>(&[event("a", 1)], None).await;
    assert!(
        matches!(again, Err(PersistenceError::OptimisticLockError)),
        "{again:?}"
    );
    repo.persist::<Task>(&[event("a", 2)], None).await.unwrap();
    assert_eq!(outbox_len(&pool).await, 2);
}
