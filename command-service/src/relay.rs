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
//! - Batches overlap: the next batch is read while one is being published,
//!   and is published while that one is deleted. A row whose aggregate has
//!   an event in the batch being published is left for a later batch, and
//!   after a failed publish the batch read ahead is dropped (its rows stay
//!   in the outbox).
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
use serde_json::value::RawValue;
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
    /// The event's JSON exactly as stored: published without being parsed
    /// into a tree and written out again.
    pub payload: String,
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
        EventEnvelope {
            payload: serde_json::from_str(&self.payload).unwrap_or(Value::Null),
            ..self.envelope_without_payload()
        }
    }

    /// The envelope with a null payload (the caller adds it).
    fn envelope_without_payload(&self) -> EventEnvelope {
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
            payload: Value::Null,
            hash: self.hash.clone(),
        }
    }

    /// The published body: [`Self::envelope`] serialised, with the payload
    /// copied as stored rather than parsed and re-serialised.
    pub fn wire_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        Self::body(&self.envelope_without_payload(), &self.payload)
    }

    /// `envelope` serialised with `payload` (JSON text) in its place.
    fn body(envelope: &EventEnvelope, payload: &str) -> Result<Vec<u8>, serde_json::Error> {
        let payload: &RawValue = serde_json::from_str(payload)?;
        serde_json::to_vec(&WireEnvelope {
            event_id: envelope.event_id,
            aggregate_type: &envelope.aggregate_type,
            aggregate_id: &envelope.aggregate_id,
            sequence: envelope.sequence,
            event_type: &envelope.event_type,
            event_version: &envelope.event_version,
            occurred_at: envelope.occurred_at,
            metadata: &envelope.metadata,
            payload,
            hash: envelope.hash.as_deref(),
        })
    }

    fn publish_message(&self) -> Result<PublishMessage, serde_json::Error> {
        let envelope = self.envelope_without_payload();
        let body = Self::body(&envelope, &self.payload)?;
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
        Ok(PublishMessage::build().payload(body.into()).headers(h))
    }
}

/// [`EventEnvelope`]'s serialised form with a borrowed, unparsed payload;
/// `wire_body_reads_back_as_the_envelope` keeps the two in step.
#[derive(serde::Serialize)]
struct WireEnvelope<'a> {
    event_id: uuid::Uuid,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    sequence: i64,
    event_type: &'a str,
    event_version: &'a str,
    occurred_at: DateTime<Utc>,
    metadata: &'a EventMetadata,
    payload: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
}

/// Reads up to `limit` outbox rows in id order.
pub async fn fetch_batch(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<OutboxRow>> {
    fetch_batch_excluding(conn, limit, &[]).await
}

/// Reads up to `limit` outbox rows in id order, leaving out `in_flight`
/// (rows being published, not yet deleted). Planned for each call (not
/// prepared), so that Postgres hashes the list it leaves out.
pub async fn fetch_batch_excluding(
    conn: &mut PgConnection,
    limit: i64,
    in_flight: &[i64],
) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as::<_, OutboxRow>(
        "SELECT id, aggregate_type, aggregate_id, sequence, event_type, event_version, \
                payload::text AS payload, metadata, committed_at, hash \
         FROM outbox WHERE id <> ALL($2) ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .bind(in_flight)
    .persistent(in_flight.is_empty())
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
        // The outbox churns like a queue: its statistics lag its size, and a
        // plan priced with them scans every dead row of it for each batch's
        // delete (see `service_kit::index_scans`, which sets the same for a
        // pool). Every statement here reads the primary key.
        sqlx::query(
            "SELECT set_config('enable_seqscan', 'off', false), set_config('jit', 'off', false)",
        )
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
        // The batch being published, while the next one is read and the
        // previous one deleted.
        let mut in_flight: Option<InFlight> = None;
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
            let exclude = in_flight.as_ref().map_or(&[][..], |f| f.ids.as_slice());
            let fetched =
                fetch_batch_excluding(&mut conn, self.settings.batch_size, exclude).await?;
            // A row whose aggregate has an event still being published waits
            // for a later batch, so that no event overtakes an earlier one.
            let ready: Vec<OutboxRow> = match &in_flight {
                Some(f) => fetched
                    .into_iter()
                    .filter(|r| !f.aggregates.contains(&aggregate_key(r)))
                    .collect(),
                None => fetched,
            };
            let Some(current) = in_flight.take() else {
                if ready.is_empty() {
                    if stopping {
                        return Ok(());
                    }
                    self.wait_for_work(&mut listener, shutdown).await;
                } else {
                    in_flight = Some(InFlight::start(&self.js, ready));
                }
                continue;
            };
            let (outcome, sent) = current.finish().await;
            if outcome.error.is_none() && !ready.is_empty() {
                // The next batch goes out while this one is deleted.
                in_flight = Some(InFlight::start(&self.js, ready));
            }
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
                    tracing::warn!(error = %e, acked = outcome.acked.len(), pending = sent - outcome.acked.len(),
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

/// A batch being published by its own task.
struct InFlight {
    ids: Vec<i64>,
    aggregates: HashSet<u64>,
    task: tokio::task::JoinHandle<PublishOutcome>,
}

impl InFlight {
    fn start(js: &jetstream::Context, rows: Vec<OutboxRow>) -> Self {
        let ids = rows.iter().map(|r| r.id).collect();
        let aggregates = rows.iter().map(aggregate_key).collect();
        let js = js.clone();
        let task = tokio::spawn(async move { publish_rows(&js, &rows).await });
        Self {
            ids,
            aggregates,
            task,
        }
    }

    /// Waits for the publishes; returns the outcome and how many rows were sent.
    async fn finish(self) -> (PublishOutcome, usize) {
        let sent = self.ids.len();
        match self.task.await {
            Ok(outcome) => (outcome, sent),
            Err(e) => (
                PublishOutcome {
                    error: Some(format!("the publishing task failed: {e}")),
                    ..PublishOutcome::default()
                },
                sent,
            ),
        }
    }
}

/// A row's aggregate, hashed. Two aggregates with the same hash only make a
/// row wait for one batch more than it needs to.
fn aggregate_key(row: &OutboxRow) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (row.aggregate_type.as_str(), row.aggregate_id.as_str()).hash(&mut h);
    h.finish()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hash: Option<&str>) -> OutboxRow {
        OutboxRow {
            id: 7,
            aggregate_type: "task".into(),
            aggregate_id: "0b6f3f5e-2f4c-4a4e-9a51-5d0c2b9e7a10".into(),
            sequence: 3,
            event_type: "TaskSubmitted".into(),
            event_version: "1.0".into(),
            // As Postgres stores it: jsonb's spacing, nested values.
            payload: r#"{"TaskSubmitted": {"input": {"text": "a \"quoted\" é"}, "priority": 5}}"#
                .into(),
            metadata: serde_json::json!({
                "actor": "alice", "correlation_id": "c1", "causation_id": "k1",
                "request_id": "r1", "occurred_at": "2026-11-26T10:00:00.123456Z", "other": 1
            }),
            committed_at: Utc::now(),
            hash: hash.map(str::to_string),
        }
    }

    #[test]
    fn wire_body_reads_back_as_the_envelope() {
        for hash in [Some("ab12"), None] {
            let r = row(hash);
            let body = r.wire_body().unwrap();
            let read: EventEnvelope = serde_json::from_slice(&body).unwrap();
            assert_eq!(read, r.envelope());
            assert_eq!(read.payload["TaskSubmitted"]["priority"], 5);
            assert_eq!(read.metadata.actor, "alice");
        }
    }

    #[test]
    fn a_payload_that_is_not_json_is_refused() {
        let mut r = row(None);
        r.payload = "{not json".into();
        assert!(r.wire_body().is_err());
        assert!(r.publish_message().is_err());
    }
}
