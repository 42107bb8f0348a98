//! The projector runtime: one durable JetStream pull consumer per projection,
//! events applied in stream order in batches, with the checkpoint stored in
//! the same Postgres transaction as the read-model change.
//!
//! One instance applies a projection at a time (an advisory lock); it
//! positions the durable consumer just after the checkpoint when it starts.
//!
//! Crash safety: a batch is one transaction (read models + checkpoint +
//! dead letters) and its messages are acked only after it commits. A crash
//! before the commit loses the whole batch, which JetStream redelivers; a
//! crash after the commit but before the acks redelivers messages at or below
//! the checkpoint, which are skipped. Within a batch each event runs in a
//! savepoint, so one bad event does not undo the others.
//!
//! A projection whose outside store flushes at a cost may put the flush
//! off ([`Projection::flush_every`]): its batches then commit without the
//! flush and the checkpoint, which follow within that bound or as soon as the
//! stream is quiet; a restart re-applies from the stored checkpoint.
//!
//! A batch is first tried fast: every event handed to the projection in one
//! [`Projection::apply_batch`] call, no savepoints. Only when that fails is it
//! re-run event by event as above.
//!
//! Failures: an event that cannot be decoded is parked at once (decoding is
//! deterministic); one whose apply fails is retried `max_attempts` times,
//! then parked. Every later event of a parked aggregate is parked behind it
//! until [`crate::dead_letters::redrive`] applies them in order. Other
//! aggregates keep flowing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, AckKind};
use futures::StreamExt;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

use crate::dead_letters::{self, Parked};
use crate::decode::{aggregate_of_subject, decode, ProjectedEvent};
use service_kit::leader;

/// How often a running projection checks that it still holds its lock.
const LOCK_CHECK: Duration = Duration::from_secs(1);

/// The Postgres channel a projection notifies after each committed batch
/// (payload `<projection>:<checkpoint>`).
pub const CHECKPOINT_CHANNEL: &str = "sutazai_projection";

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// The projection had already applied it (a redelivery or duplicate).
    Skipped,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event does not fit the projection's state (a gap in the
    /// aggregate's sequence, a missing row, a bad value).
    #[error("{0}")]
    Rejected(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// An outside store (Qdrant, Neo4j, an embedder) cannot be reached: the
    /// batch is not stored and is retried from the checkpoint, nothing parked.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A batch that must be retried whole.
fn unavailable(message: String) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(message))
}

/// A Postgres projection. `apply` runs inside the batch transaction (in a
/// savepoint) and must guard against re-application with the aggregate's
/// sequence, so that a duplicate changes nothing.
#[async_trait::async_trait]
pub trait Projection: Send + Sync {
    /// Names the durable consumer, the checkpoint and the dead letters.
    fn name(&self) -> &str;

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &ProjectedEvent,
    ) -> Result<Applied, ApplyError>;

    /// Applies events in stream order, all or none: an error means the
    /// transaction must be rolled back (the runtime then applies the batch
    /// event by event to isolate the failing one). One result per event.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[ProjectedEvent],
    ) -> Result<Vec<Applied>, ApplyError> {
        let mut applied = Vec::with_capacity(events.len());
        for event in events {
            applied.push(self.apply(conn, event).await?);
        }
        Ok(applied)
    }

    /// Makes writes outside Postgres durable; runs before the checkpoint
    /// that covers them commits.
    async fn flush(&self) -> Result<(), ApplyError> {
        Ok(())
    }

    /// How long [`Self::flush`] may be put off. `None` (the default): every
    /// batch flushes and stores its checkpoint. `Some(d)`: a batch that parks
    /// nothing leaves both to a later one, at most `d` after the first batch
    /// left unflushed, or to the moment the stream goes quiet — for a store
    /// whose flush is a costly step of its own (Qdrant Edge's: an `msync` of
    /// every mapped file). The checkpoint then lags what has been applied,
    /// so a restart re-applies events the store already holds: the
    /// projection must skip those (every projection guards its writes with
    /// the aggregate's sequence).
    fn flush_every(&self) -> Option<Duration> {
        None
    }

    /// The least time between the starts of two batches. Zero (the
    /// default): a batch starts as soon as an event arrives. A projection
    /// off the path of a command's visibility (the graph, the vector
    /// projection) can let events gather instead: under load its batches are
    /// larger and fewer, and so are its round trips and commits, which
    /// leaves the machine to the projections reads wait for. An event that
    /// arrives after a quiet spell longer than this is applied at once.
    fn linger(&self) -> Duration {
        Duration::ZERO
    }
}

/// The default linger, in ms, of the projections off that path (the graph's
/// `GRAPH_LINGER_MS`, the vector projection's `SEARCH_LINGER_MS`).
pub const DEFAULT_LINGER_MS: u64 = 100;

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub stream: String,
    /// Prefix of durable consumer names, so that two deployments (or a
    /// rebuild) can follow one stream side by side.
    pub consumer_prefix: String,
    /// Messages per batch (one transaction); also bounds ack-pending.
    pub batch_size: usize,
    /// Tries of a failing apply before the event is parked.
    pub max_attempts: u32,
    /// How long one fetch waits for messages.
    pub fetch_wait: Duration,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            stream: schemas::subjects::DEFAULT_STREAM.into(),
            consumer_prefix: "projector".into(),
            batch_size: 500,
            max_attempts: 3,
            fetch_wait: Duration::from_millis(200),
        }
    }
}

/// Live counters of one projection, for metrics and tests.
#[derive(Debug, Default)]
pub struct ProjectionStatus {
    pub running: AtomicBool,
    pub checkpoint: AtomicU64,
    pub applied: AtomicU64,
    pub skipped: AtomicU64,
    pub parked: AtomicU64,
    pub batches: AtomicU64,
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: u64,
    pub skipped: u64,
    pub parked: u64,
    /// The last stream sequence the batch covered.
    pub checkpoint: u64,
    /// The batch neither flushed nor stored its checkpoint (see
    /// [`Projection::flush_every`]).
    pub deferred: bool,
}

/// The durable consumer name of a projection.
pub fn consumer_name(prefix: &str, projection: &str) -> String {
    format!("{prefix}_{projection}")
}

/// Serialises batches and re-drives of one projection across processes (the
/// same key as `projector_batch_start`, which takes it for each batch).
pub async fn lock_projection(conn: &mut PgConnection, projection: &str) -> sqlx::Result<()> {
    // Scoped by schema, so a rebuild into another schema does not contend.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sutazai-projection:' || current_schema() || ':' || $1))")
        .bind(projection)
        .execute(conn)
        .await?;
    Ok(())
}

/// What a batch starts from, in one round trip (`projector_batch_start` in
/// the migrations): the projection's lock for this transaction (see
/// [`lock_projection`]), then the checkpoint (0 if none) and the aggregates
/// with parked events, each with its first (blocking) dead letter.
async fn batch_start(
    conn: &mut PgConnection,
    projection: &str,
) -> sqlx::Result<(i64, ParkedAggregates)> {
    type Row = (
        Option<i64>,
        Option<Vec<String>>,
        Option<Vec<String>>,
        Option<Vec<i64>>,
    );
    let (checkpoint, types, ids, letters): Row = sqlx::query_as(
        "SELECT checkpoint, aggregate_types, aggregate_ids, letters FROM projector_batch_start($1)",
    )
    .bind(projection)
    .fetch_one(conn)
    .await?;
    let parked = types
        .unwrap_or_default()
        .into_iter()
        .zip(ids.unwrap_or_default())
        .zip(letters.unwrap_or_default())
        .collect();
    Ok((checkpoint.unwrap_or(0), parked))
}

/// The checkpoint (last applied stream sequence) of a projection; 0 if none.
pub async fn checkpoint(conn: &mut PgConnection, projection: &str) -> sqlx::Result<i64> {
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT stream_sequence FROM projector_checkpoints WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(conn)
    .await?;
    Ok(v.unwrap_or(0))
}

/// (Re)creates the projection's durable consumer positioned just after the
/// Postgres checkpoint. The checkpoint is the truth and the consumer only a
/// cursor: starting from it after every (re)start means messages a dead
/// instance held unacked cannot arrive out of order later.
pub async fn reset_consumer(
    js: &jetstream::Context,
    settings: &RuntimeSettings,
    projection: &str,
    checkpoint: u64,
) -> Result<consumer::PullConsumer, async_nats::Error> {
    let stream = js.get_stream(&settings.stream).await?;
    let name = consumer_name(&settings.consumer_prefix, projection);
    match stream.delete_consumer(&name).await {
        Ok(_) => {}
        Err(e) if e.to_string().contains("not found") => {}
        Err(e) => return Err(e.into()),
    }
    let deliver_policy = match checkpoint {
        0 => consumer::DeliverPolicy::All,
        n => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: n + 1,
        },
    };
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("SutazAI projection {projection}")),
            ack_policy: consumer::AckPolicy::All,
            deliver_policy,
            ack_wait: Duration::from_secs(30),
            // The batch being applied and the prefetched ones.
            max_ack_pending: (settings.batch_size * 4) as i64,
            ..Default::default()
        })
        .await?;
    Ok(consumer)
}

/// Applies one batch of messages in one transaction. Messages at or below the
/// checkpoint are skipped. Errors are database errors of the batch itself
/// (the caller naks the messages and retries).
///
/// A batch first runs without savepoints (the common case: every event
/// applies); if any apply fails, that attempt is rolled back whole and the
/// batch runs again carefully, each event in a savepoint with retries, so
/// that only the failing event is parked.
pub async fn process_batch(
    pool: &PgPool,
    projection: &dyn Projection,
    max_attempts: u32,
    messages: &[(u64, String, async_nats::HeaderMap, bytes::Bytes)],
) -> Result<BatchOutcome, sqlx::Error> {
    process_batch_deferring(pool, projection, max_attempts, messages, false).await
}

/// [`process_batch`]; with `defer`, a batch that parks nothing commits
/// without flushing the projection's outside store or storing its checkpoint
/// ([`BatchOutcome::deferred`]), which [`store_flushed`] does later.
pub async fn process_batch_deferring(
    pool: &PgPool,
    projection: &dyn Projection,
    max_attempts: u32,
    messages: &[(u64, String, async_nats::HeaderMap, bytes::Bytes)],
    defer: bool,
) -> Result<BatchOutcome, sqlx::Error> {
    match run_batch(pool, projection, max_attempts, messages, false, defer).await? {
        Some(outcome) => Ok(outcome),
        None => Ok(
            run_batch(pool, projection, max_attempts, messages, true, defer)
                .await?
                .unwrap_or_default(),
        ),
    }
}

/// Flushes the projection's outside store, then stores `last` as its
/// checkpoint (under the projection's lock): what a deferred batch left.
pub async fn store_flushed(
    pool: &PgPool,
    projection: &dyn Projection,
    last: u64,
) -> Result<(), sqlx::Error> {
    if let Err(e) = projection.flush().await {
        return Err(unavailable(e.to_string()));
    }
    let mut tx = pool.begin().await?;
    lock_projection(&mut tx, projection.name()).await?;
    save_checkpoint(&mut tx, projection.name(), last).await?;
    tx.commit().await
}

/// Stores the checkpoint in one statement with the notification (delivered
/// on commit) that wakes read-your-writes waiters in the query service, and
/// `SET LOCAL synchronous_commit = off` — a projection and its checkpoint
/// commit together and are derived from the stream, so a batch lost in a
/// Postgres crash is redelivered from the checkpoint (the consumer is
/// re-positioned there at every start) and the commit need not wait for the
/// WAL flush. Only commands' commits wait.
async fn save_checkpoint(conn: &mut PgConnection, name: &str, last: u64) -> sqlx::Result<()> {
    sqlx::query(
        "WITH saved AS (INSERT INTO projector_checkpoints (projection, stream_sequence, updated_at) \
             VALUES ($1, $2, now()) ON CONFLICT (projection) DO UPDATE \
             SET stream_sequence = EXCLUDED.stream_sequence, updated_at = now() RETURNING 1) \
         SELECT pg_notify($3, $4), set_config('synchronous_commit', 'off', true) FROM saved",
    )
    .bind(name)
    .bind(last as i64)
    .bind(CHECKPOINT_CHANNEL)
    .bind(format!("{name}:{last}"))
    .execute(conn)
    .await?;
    Ok(())
}

/// One attempt at a batch; `None` when a fast (`careful == false`) attempt
/// met a failing apply and was rolled back.
async fn run_batch(
    pool: &PgPool,
    projection: &dyn Projection,
    max_attempts: u32,
    messages: &[(u64, String, async_nats::HeaderMap, bytes::Bytes)],
    careful: bool,
    defer: bool,
) -> Result<Option<BatchOutcome>, sqlx::Error> {
    let name = projection.name();
    let mut tx = pool.begin().await?;
    // The lock, then the read (in a snapshot taken once the lock is held:
    // what an earlier holder committed is seen).
    let (last, mut parked) = batch_start(&mut tx, name).await?;
    let mut last = last.max(0) as u64;
    let mut outcome = BatchOutcome::default();
    // The fast attempt applies every event that is not parked in one call.
    let mut pending = Vec::new();
    for (seq, subject, headers, body) in messages {
        let seq = *seq;
        if seq <= last {
            outcome.skipped += 1;
            continue;
        }
        let raw = Parked {
            projection: name,
            stream_sequence: seq,
            subject,
            headers,
            body,
        };
        match decode(seq, body) {
            Err(e) => {
                let aggregate = aggregate_of_subject(subject);
                let blocker = aggregate.as_ref().and_then(|a| parked.get(a).copied());
                let id =
                    dead_letters::park(&mut tx, &raw, None, &e.to_string(), 1, blocker).await?;
                if let Some(a) = aggregate {
                    parked.entry(a).or_insert(id);
                }
                outcome.parked += 1;
            }
            Ok(event) => {
                let key = (
                    event.envelope.aggregate_type.clone(),
                    event.envelope.aggregate_id.clone(),
                );
                if let Some(&blocker) = parked.get(&key) {
                    let why = format!("waiting behind dead letter {blocker} of the same aggregate");
                    dead_letters::park(&mut tx, &raw, Some(&event), &why, 0, Some(blocker)).await?;
                    outcome.parked += 1;
                } else if careful {
                    match apply_with_retries(&mut tx, projection, &event, max_attempts).await? {
                        Ok(Applied::Applied) => outcome.applied += 1,
                        Ok(Applied::Skipped) => outcome.skipped += 1,
                        Err((error, attempts)) => {
                            let id = dead_letters::park(
                                &mut tx,
                                &raw,
                                Some(&event),
                                &error,
                                attempts,
                                None,
                            )
                            .await?;
                            tracing::warn!(projection = name, stream_sequence = seq,
                                aggregate_id = %key.1, dead_letter = id, %error, "event parked");
                            parked.insert(key, id);
                            outcome.parked += 1;
                        }
                    }
                } else {
                    pending.push(event);
                }
            }
        }
        last = seq;
    }
    if !pending.is_empty() {
        match projection.apply_batch(&mut tx, &pending).await {
            Ok(results) => {
                for applied in results {
                    match applied {
                        Applied::Applied => outcome.applied += 1,
                        Applied::Skipped => outcome.skipped += 1,
                    }
                }
            }
            Err(ApplyError::Unavailable(m)) => return Err(unavailable(m)),
            // Roll back this attempt; the careful one isolates the event.
            Err(_) => return Ok(None),
        }
    }
    outcome.checkpoint = last;
    // A dead letter and the checkpoint past it commit together: a batch
    // that parked an event is never deferred.
    if defer && outcome.parked == 0 {
        tx.commit().await?;
        outcome.deferred = true;
        return Ok(Some(outcome));
    }
    if let Err(e) = projection.flush().await {
        return Err(unavailable(e.to_string()));
    }
    save_checkpoint(&mut tx, name, last).await?;
    tx.commit().await?;
    Ok(Some(outcome))
}

/// Applies in a savepoint, up to `max_attempts` times. The outer error is a
/// failure of the transaction itself; the inner one is why the event failed.
pub async fn apply_with_retries(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    event: &ProjectedEvent,
    max_attempts: u32,
) -> Result<Result<Applied, (String, u32)>, sqlx::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut savepoint = conn.begin().await?;
        match projection.apply(&mut savepoint, event).await {
            Ok(applied) => {
                savepoint.commit().await?;
                return Ok(Ok(applied));
            }
            Err(ApplyError::Unavailable(m)) => {
                savepoint.rollback().await?;
                return Err(unavailable(m));
            }
            Err(e) => {
                savepoint.rollback().await?;
                if attempt >= max_attempts.max(1) {
                    return Ok(Err((e.to_string(), attempt)));
                }
            }
        }
    }
}

/// Runs one projection until `shutdown` turns true: stands by until this
/// instance leads the projection (an advisory lock), then consumes from the
/// checkpoint. Any consumer or batch failure restarts from the checkpoint.
pub async fn run(
    pool: PgPool,
    js: jetstream::Context,
    projection: Arc<dyn Projection>,
    settings: RuntimeSettings,
    status: Arc<ProjectionStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = projection.name().to_string();
    let lock = leader::projection_lock(&settings.consumer_prefix, &name);
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        let mut lock_conn = match leader::try_lead(&pool, lock).await {
            Ok(Some(conn)) => conn,
            Ok(None) => {
                tracing::debug!(projection = %name, "another instance runs this projection; standing by");
                sleep_or_stop(&mut shutdown, &mut Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(projection = %name, error = %e, "cannot reach Postgres; retrying");
                sleep_or_stop(&mut shutdown, &mut backoff).await;
                continue;
            }
        };
        let start = match pool.acquire().await {
            Ok(mut c) => checkpoint(&mut c, &name).await,
            Err(e) => Err(e),
        };
        let consumer = match start {
            Ok(cp) => reset_consumer(&js, &settings, &name, cp.max(0) as u64).await,
            Err(e) => Err(e.into()),
        };
        let consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(projection = %name, error = %e, "no consumer yet (is the stream created?); retrying");
                sleep_or_stop(&mut shutdown, &mut backoff).await;
                continue;
            }
        };
        status.running.store(true, Ordering::Relaxed);
        tracing::info!(projection = %name, "projection running");
        let result = consume(
            &pool,
            &consumer,
            projection.as_ref(),
            &settings,
            &status,
            &mut lock_conn,
            &mut shutdown,
        )
        .await;
        status.running.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(projection = %name, error = %e, "consumer stopped; restarting from the checkpoint");
                sleep_or_stop(&mut shutdown, &mut backoff).await;
            }
        }
    }
}

async fn consume(
    pool: &PgPool,
    consumer: &consumer::PullConsumer,
    projection: &dyn Projection,
    settings: &RuntimeSettings,
    status: &ProjectionStatus,
    lock_conn: &mut PgConnection,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), async_nats::Error> {
    // A continuous pull: messages arrive while the previous batch is applied,
    // and a batch is whatever has arrived (no waiting for a full one).
    let stream = consumer
        .stream()
        .max_messages_per_batch(settings.batch_size)
        .messages()
        .await?;
    let mut prefetch = Prefetch::new(stream, settings.batch_size * 2);
    // Once a second, not per batch: a round trip per small batch was a
    // measurable share of the statements at low rates.
    let mut lock = leader::LockCheck::every(LOCK_CHECK);
    let flush_every = projection.flush_every();
    // Applied by deferred batches, not yet flushed and checkpointed: the
    // last stream sequence, and when the first of those batches committed.
    let mut unflushed: Option<(u64, Instant)> = None;
    let linger = projection.linger();
    let mut last_batch: Option<Instant> = None;
    while !*shutdown.borrow() {
        if !lock.still_leading(lock_conn).await {
            return Err("lost the projection lock's connection".into());
        }
        if let Some(due) = last_batch.map(|started| started + linger) {
            if due > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        let messages = prefetch
            .next_batch(settings.batch_size, settings.fetch_wait)
            .await?;
        if messages.is_empty() {
            // The stream is quiet: what was put off is stored now.
            if let Some((last, _)) = unflushed.take() {
                store_flushed(pool, projection, last).await?;
                status.checkpoint.store(last, Ordering::Relaxed);
            }
            continue;
        }
        last_batch = Some(Instant::now());
        let defer = flush_every
            .is_some_and(|every| unflushed.is_none_or(|(_, since)| since.elapsed() < every));
        let parts: Vec<_> = messages
            .iter()
            .filter_map(|m| {
                let info = m.info().ok()?;
                Some((
                    info.stream_sequence,
                    m.subject.to_string(),
                    m.headers.clone().unwrap_or_default(),
                    m.payload.clone(),
                ))
            })
            .collect();
        match process_batch_deferring(pool, projection, settings.max_attempts, &parts, defer).await
        {
            Ok(outcome) => {
                // Acknowledges every message up to the last (AckPolicy::All).
                // A deferred batch's too: every start re-positions the
                // consumer just after the stored checkpoint.
                if let Some(last) = messages.last() {
                    last.ack().await?;
                }
                if outcome.deferred {
                    // The batch's `checkpoint` starts from the stored one: a
                    // redelivery of applied messages must not move it back.
                    let (last, _) = unflushed.get_or_insert((0, Instant::now()));
                    *last = (*last).max(outcome.checkpoint);
                } else {
                    unflushed = None;
                    status
                        .checkpoint
                        .store(outcome.checkpoint, Ordering::Relaxed);
                }
                status.applied.fetch_add(outcome.applied, Ordering::Relaxed);
                status.skipped.fetch_add(outcome.skipped, Ordering::Relaxed);
                status.parked.fetch_add(outcome.parked, Ordering::Relaxed);
                status.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // Nothing of the batch is stored; restart from the checkpoint
                // so that order is kept.
                for m in &messages {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
                return Err(format!("batch failed: {e}").into());
            }
        }
    }
    if let Some((last, _)) = unflushed {
        store_flushed(pool, projection, last).await?;
        status.checkpoint.store(last, Ordering::Relaxed);
    }
    Ok(())
}

/// A message stream read by its own task into a bounded buffer, so that
/// messages keep arriving while a batch is applied; dropping it stops the task.
pub struct Prefetch<T> {
    rx: tokio::sync::mpsc::Receiver<Result<T, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Send + 'static> Prefetch<T> {
    /// Reads `stream` ahead, at most `capacity` messages.
    pub fn new<S, E>(mut stream: S, capacity: usize) -> Self
    where
        S: futures::Stream<Item = Result<T, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let task = tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                let failed = m.is_err();
                if tx.send(m.map_err(|e| e.to_string())).await.is_err() || failed {
                    return;
                }
            }
            let _ = tx.send(Err("the message stream ended".into())).await;
        });
        Self { rx, task }
    }

    /// Waits up to `wait` for a first message, then takes those already
    /// read, up to `max`: a batch is as large as the backlog allows and never
    /// waits to fill up. Empty when nothing arrived within `wait`.
    pub async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<T>, String> {
        let first = match tokio::time::timeout(wait, self.rx.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => return Err("the message stream ended".into()),
            Ok(Some(m)) => m?,
        };
        let mut batch = Vec::with_capacity(max.max(1));
        batch.push(first);
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(m) => batch.push(m?),
                Err(_) => break,
            }
        }
        Ok(batch)
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn sleep_or_stop(shutdown: &mut watch::Receiver<bool>, backoff: &mut Duration) {
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = shutdown.changed() => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
}

/// Parked aggregates of a projection → the dead letter each waits behind.
pub type ParkedAggregates = HashMap<(String, String), i64>;
