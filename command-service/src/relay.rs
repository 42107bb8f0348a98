//! The outbox relay: publishes every committed event to JetStream, in order per
//! aggregate, exactly once in effect.
//!
//! - One relay is active across all instances (`service_kit::leader`); it reads and
//!   deletes outbox rows on the very connection that holds the lock, so a relay
//!   that lost its connection (and with it the lock) can no longer delete.
//! - Rows are read in id order and published with `Nats-Msg-Id` =
//!   `<aggregate_type>/<aggregate_id>/<sequence>`; a row is deleted only after
//!   JetStream acknowledged it. A crash between ack and delete re-publishes
//!   the row, and JetStream's duplicate window drops the copy.
//! - Publishes are pipelined, but a batch goes out in *rounds* holding at most
//!   one event per aggregate, each round fully acknowledged before the next.
//!   A lost publish (e.g. during a reconnect) can then never let a later
//!   event of the same aggregate reach the stream before it.
//! - The relay wakes when a command of its own process commits ([`OutboxSignal`]),
//!   on `LISTEN sutazai_outbox` for commits of other instances, and also polls,
//!   because notifications are not durable. The NOTIFY is not sent by the
//!   outbox trigger: Postgres serialises notifying transactions through their
//!   commit, which would cost every command its group commit. When NATS is down it backs off and retries;
//!   commands keep being accepted, since they are durable in Postgres.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, message::PublishMessage};
use chrono::{DateTime, Utc};
use schemas::envelope::metadata_keys;
use schemas::subjects::{self, headers};
use schemas::{EventEnvelope, EventMetadata};
use serde_json::Value;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::PgConnection;
use tokio::sync::{watch, Notify};

use crate::stream::{ensure_stream, StreamSettings};
use service_kit::leader;

/// Channel on which instances tell the leading relay about new outbox rows.
pub const CHANNEL: &str = "sutazai_outbox";

/// Tells relays that a command committed new outbox rows: the relay of this
/// process directly, a relay leading in another instance through
/// [`notify_peers`]. Wake-ups coalesce: many commits while a relay is busy
/// cost it one more fetch.
#[derive(Debug, Default)]
pub struct OutboxSignal {
    local: Notify,
    peers: Notify,
}

impl OutboxSignal {
    /// Called after every commit that wrote events.
    pub fn committed(&self) {
        self.local.notify_one();
        self.peers.notify_one();
    }
}

/// Sends one `NOTIFY` for the commits since the last one, while this process
/// does not lead the relay (its own relay is woken in process). The NOTIFY
/// runs in its own transaction, outside every command's, and without waiting
/// for a WAL flush: a lost notification only delays the relay to its next poll.
pub async fn notify_peers(
    pool: PgPool,
    signal: Arc<OutboxSignal>,
    status: Arc<RelayStatus>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = signal.peers.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if status.is_leader() {
            continue;
        }
        let sent = sqlx::raw_sql(
            "SET LOCAL synchronous_commit = off; SELECT pg_notify('sutazai_outbox', '')",
        )
        .execute(&pool)
        .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "relay: cannot notify the leading relay; it will poll");
        }
    }
}

/// One committed event waiting to be published.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub committed_at: DateTime<Utc>,
    pub hash: Option<String>,
}

impl OutboxRow {
    pub fn subject(&self) -> String {
        subjects::event_subject(&self.aggregate_type, &self.aggregate_id)
    }

    pub fn message_id(&self) -> String {
        subjects::message_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }

    /// The published form. Metadata values that are not strings are ignored
    /// (cqrs-es stores a string map); a missing or unreadable `occurred_at`
    /// falls back to the commit time.
    pub fn envelope(&self) -> EventEnvelope {
        let map: std::collections::HashMap<String, String> = self
            .metadata
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let occurred_at = map
            .get(metadata_keys::OCCURRED_AT)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map_or(self.committed_at, |t| t.with_timezone(&Utc));
        EventEnvelope {
            event_id: EventEnvelope::event_id_for(
                &self.aggregate_type,
                &self.aggregate_id,
                self.sequence,
            ),
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
            event_type: self.event_type.clone(),
            event_version: self.event_version.clone(),
            occurred_at,
            metadata: EventMetadata::from_map(&map),
            payload: self.payload.clone(),
            hash: self.hash.clone(),
        }
    }

    fn publish_message(&self) -> Result<PublishMessage, serde_json::Error> {
        let envelope = self.envelope();
        let mut h = HeaderMap::new();
        h.insert(NATS_MESSAGE_ID, self.message_id().as_str());
        h.insert(headers::EVENT_TYPE, self.event_type.as_str());
        h.insert(headers::EVENT_VERSION, self.event_version.as_str());
        h.insert(
            headers::AGGREGATE_SEQUENCE,
            self.sequence.to_string().as_str(),
        );
        h.insert(
            headers::CORRELATION_ID,
            envelope.metadata.correlation_id.as_str(),
        );
        h.insert(
            headers::CAUSATION_ID,
            envelope.metadata.causation_id.as_str(),
        );
        if let Some(hash) = &self.hash {
            h.insert(headers::EVENT_HASH, hash.as_str());
        }
        let body = serde_json::to_vec(&envelope)?;
        Ok(PublishMessage::build().payload(body.into()).headers(h))
    }
}

/// Reads up to `limit` outbox rows in id order.
pub async fn fetch_batch(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as::<_, OutboxRow>(
        "SELECT id, aggregate_type, aggregate_id, sequence, event_type, event_version, \
                payload, metadata, committed_at, hash \
         FROM outbox ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Deletes published rows.
pub async fn delete_rows(conn: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// What one publish attempt achieved.
#[derive(Debug, Default)]
pub struct PublishOutcome {
    /// Rows JetStream acknowledged (safe to delete).
    pub acked: Vec<i64>,
    /// Of those, how many it had already stored (a re-publish).
    pub duplicates: u64,
    /// Why the attempt stopped early, if it did.
    pub error: Option<String>,
}

/// Publishes `rows` in rounds of at most one event per aggregate, pipelining
/// each round and waiting for all its acks before the next one.
pub async fn publish_rows(js: &jetstream::Context, rows: &[OutboxRow]) -> PublishOutcome {
    let mut outcome = PublishOutcome::default();
    let mut remaining: Vec<&OutboxRow> = rows.iter().collect();
    while !remaining.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<&OutboxRow>, Vec<&OutboxRow>) = remaining
            .into_iter()
            .partition(|r| seen.insert((r.aggregate_type.as_str(), r.aggregate_id.as_str())));
        let mut pending = Vec::with_capacity(round.len());
        for row in round {
            let sent = match row.publish_message() {
                Ok(message) => js
                    .send_publish(row.subject(), message)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("envelope of outbox row {}: {e}", row.id)),
            };
            match sent {
                Ok(ack) => pending.push((row.id, ack)),
                Err(e) => {
                    outcome.error = Some(e);
                    break;
                }
            }
        }
        for (id, ack) in pending {
            match ack.await {
                Ok(ack) => {
                    outcome.acked.push(id);
                    outcome.duplicates += u64::from(ack.duplicate);
                }
                Err(e) => {
                    outcome.error.get_or_insert(e.to_string());
                }
            }
        }
        if outcome.error.is_some() {
            return outcome;
        }
        remaining = later;
    }
    outcome
}

/// What the relay is doing, for health answers and tests.
#[derive(Debug, Default)]
pub struct RelayStatus {
    pub leader: AtomicBool,
    pub published: AtomicU64,
    pub duplicates: AtomicU64,
}

impl RelayStatus {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub stream: StreamSettings,
    pub batch_size: i64,
    pub poll: Duration,
    pub standby_poll: Duration,
}

pub struct Relay {
    pool: PgPool,
    js: jetstream::Context,
    settings: RelaySettings,
    status: Arc<RelayStatus>,
    signal: Arc<OutboxSignal>,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        js: jetstream::Context,
        settings: RelaySettings,
        status: Arc<RelayStatus>,
        signal: Arc<OutboxSignal>,
    ) -> Self {
        Self {
            pool,
            js,
            settings,
            status,
            signal,
        }
    }

    /// Stands by until it holds the lock, then relays until `shutdown` turns
    /// true, flushing the outbox before it returns (unless NATS is down).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match leader::try_lead(&self.pool, leader::RELAY_LOCK).await {
                Ok(Some(conn)) => {
                    tracing::info!("relay: leading");
                    self.status.leader.store(true, Ordering::Relaxed);
                    let result = self.lead(conn, &mut shutdown).await;
                    self.status.leader.store(false, Ordering::Relaxed);
                    match result {
                        Ok(()) => {
                            tracing::info!("relay: stopped");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "relay: lost its database connection; standing by")
                        }
                    }
                }
                Ok(None) => tracing::debug!("relay: another instance leads; standing by"),
                Err(e) => tracing::warn!(error = %e, "relay: cannot reach Postgres; standing by"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.standby_poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn lead(
        &self,
        mut conn: PgConnection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), sqlx::Error> {
        // A delete lost in a Postgres crash only re-publishes rows JetStream
        // has, and its duplicate window drops them: no need to wait for the
        // WAL flush on this connection.
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut conn)
            .await?;
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut l) => match l.listen(CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "relay: LISTEN failed; polling only");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "relay: LISTEN failed; polling only");
                None
            }
        };
        let mut stream_ready = false;
        let mut backoff = Backoff::default();
        loop {
            let stopping = *shutdown.borrow();
            if !stream_ready {
                match ensure_stream(&self.js, &self.settings.stream).await {
                    Ok(()) => stream_ready = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "relay: cannot set up the JetStream stream; retrying");
                        if stopping {
                            return Ok(());
                        }
                        backoff.wait(shutdown).await;
                        continue;
                    }
                }
            }
            let rows = fetch_batch(&mut conn, self.settings.batch_size).await?;
            if rows.is_empty() {
                if stopping {
                    return Ok(());
                }
                self.wait_for_work(&mut listener, shutdown).await;
                continue;
            }
            let outcome = publish_rows(&self.js, &rows).await;
            if !outcome.acked.is_empty() {
                delete_rows(&mut conn, &outcome.acked).await?;
                self.status
                    .published
                    .fetch_add(outcome.acked.len() as u64, Ordering::Relaxed);
                self.status
                    .duplicates
                    .fetch_add(outcome.duplicates, Ordering::Relaxed);
            }
            match outcome.error {
                None => backoff.reset(),
                Some(e) => {
                    tracing::warn!(error = %e, acked = outcome.acked.len(), pending = rows.len() - outcome.acked.len(),
                        "relay: publish failed; will retry");
                    // The stream may have been lost with the server: set it up again.
                    stream_ready = false;
                    if stopping {
                        return Ok(());
                    }
                    backoff.wait(shutdown).await;
                }
            }
        }
    }

    async fn wait_for_work(
        &self,
        listener: &mut Option<PgListener>,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let notified = async {
            match listener.as_mut() {
                Some(l) => {
                    if l.recv().await.is_err() {
                        tokio::time::sleep(self.settings.poll).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = notified => {}
            _ = self.signal.local.notified() => {}
            _ = tokio::time::sleep(self.settings.poll) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Exponential backoff from 100 ms to 5 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    fn reset(&mut self) {
        *self = Self::default();
    }

    async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(self.next) => {}
            _ = shutdown.changed() => {}
        }
        self.next = (self.next * 2).min(Duration::from_secs(5));
    }
}
