//! The relay: no loss and no duplicate across a crash after publishing but
//! before deleting, across a NATS outage, and across a relay failover.

use std::sync::atomic::Ordering;
use std::time::Duration;

use command_service::relay::{fetch_batch, publish_rows};
use command_service::stream::{ensure_stream, StreamSettings};
use sqlx::Connection;
use tests::*;

use crate::support::Api;

async fn drained(pool: &sqlx::PgPool) {
    wait_until(Duration::from_secs(20), "the outbox to drain", || {
        let pool = pool.clone();
        async move { outbox_len(&pool).await == 0 }
    })
    .await;
}

#[tokio::test]
async fn crash_after_publish_before_delete_loses_and_duplicates_nothing() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    // Commands only: no relay yet.
    let mut c = config(&db, &nats);
    c.relay_enabled = false;
    let writer = start_service(c.clone()).await;
    let api = Api::new(base_url(&writer));
    for i in 0..30 {
        api.submit(if i % 2 == 0 { "echo" } else { "sleep" }).await;
    }
    let pool = db.pool().await;
    assert_eq!(outbox_len(&pool).await, 60);

    // A relay that publishes the first 45 rows and dies before deleting them.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    ensure_stream(&js, &StreamSettings::from_config(&c))
        .await
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let rows = fetch_batch(&mut conn, 45).await.unwrap();
    let outcome = publish_rows(&js, &rows).await;
    assert_eq!(outcome.acked.len(), 45);
    assert!(outcome.error.is_none());
    drop(conn);
    assert_eq!(outbox_len(&pool).await, 60, "nothing was deleted");

    // A fresh relay takes over: it re-publishes those 45 (dropped as
    // duplicates by JetStream) and the other 15.
    c.relay_enabled = true;
    let relay = start_service(c).await;
    drained(&pool).await;
    // The counter moves just after the delete commits.
    wait_until(
        Duration::from_secs(5),
        "the relay to count its publishes",
        || async { relay.relay.published.load(Ordering::Relaxed) >= 60 },
    )
    .await;
    assert_eq!(relay.relay.published.load(Ordering::Relaxed), 60);
    assert_eq!(relay.relay.duplicates.load(Ordering::Relaxed), 45);
    let events = assert_stream_matches_store(&pool, &nats.url()).await;
    assert_eq!(events.len(), 60);
    relay.shutdown().await.unwrap();
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn commands_are_accepted_while_nats_is_down_and_delivered_when_it_returns() {
    let db = TestDb::new().await;
    let mut nats = NatsServer::start().await;
    let server = start_service(config(&db, &nats)).await;
    let api = Api::new(base_url(&server));
    let pool = db.pool().await;

    for _ in 0..10 {
        api.submit("echo").await;
    }
    drained(&pool).await;

    nats.stop();
    let mut during = Vec::new();
    for _ in 0..20 {
        during.push(api.submit("echo").await);
    }
    let agent = api.create_agent(&["echo"]).await;
    assert_eq!(outbox_len(&pool).await, 41, "commands kept being accepted");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        outbox_len(&pool).await,
        41,
        "nothing is lost while NATS is down"
    );

    nats.resume().await;
    drained(&pool).await;
    let events = assert_stream_matches_store(&pool, &nats.url()).await;
    assert_eq!(events.len(), 20 + 41);
    assert!(events.iter().any(|e| e.envelope.aggregate_id == agent));
    assert!(during.iter().all(|t| events
        .iter()
        .filter(|e| &e.envelope.aggregate_id == t)
        .count()
        == 2));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_relay_leads_and_a_standby_takes_over_when_it_dies() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let first = start_service(config(&db, &nats)).await;
    wait_until(
        Duration::from_secs(10),
        "the first instance to lead",
        || async { first.relay.is_leader() },
    )
    .await;
    let second = start_service(config(&db, &nats)).await;
    let pool = db.pool().await;
    let (a, b) = (Api::new(base_url(&first)), Api::new(base_url(&second)));
    for _ in 0..15 {
        a.submit("echo").await;
        b.submit("echo").await;
    }
    drained(&pool).await;
    wait_until(
        Duration::from_secs(5),
        "the leader to count its publishes",
        || async { first.relay.published.load(Ordering::Relaxed) >= 60 },
    )
    .await;
    assert!(first.relay.is_leader());
    assert!(!second.relay.is_leader(), "only one relay leads");
    assert_eq!(
        second.relay.published.load(Ordering::Relaxed),
        0,
        "the standby published nothing"
    );
    assert_eq!(first.relay.published.load(Ordering::Relaxed), 60);

    // Commands keep arriving through the survivor while the leader dies.
    let load = tokio::spawn(async move {
        for _ in 0..40 {
            b.submit("echo").await;
        }
        b
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    first.abort().await;
    let b = load.await.unwrap();
    wait_until(Duration::from_secs(10), "the standby to lead", || async {
        second.relay.is_leader()
    })
    .await;
    b.submit("echo").await;
    drained(&pool).await;
    let events = assert_stream_matches_store(&pool, &nats.url()).await;
    assert_eq!(events.len(), 2 * (30 + 40 + 1));
    second.shutdown().await.unwrap();
}
