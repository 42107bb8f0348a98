//! Rebuilding a projection from the stream into a fresh copy while the live
//! one keeps serving, then swapping it in atomically — or comparing it with
//! the live one (`verify`).
//!
//! The copy is built in its own schema (`rebuild_<projection>_<ms>`) by the
//! same projection code, through a pool whose `search_path` is that schema.
//! At the end, under the live projection's lock (live batches wait), the copy
//! catches up to at least the live checkpoint; then either the tables change
//! places (`ALTER … SET SCHEMA`, one transaction: no reader sees a half-built
//! model) and the live checkpoint moves to the copy's, or the two are
//! compared row by row. An aborted rebuild leaves only its own schema, which
//! the next rebuild drops. Two rebuilds of one projection cannot run at once.
//!
//! Speed: the copy is filled in lanes, one connection each, every aggregate's
//! events in one lane (by subject) and in stream order there — the read
//! models keep one row per aggregate, so lanes never touch the same rows.
//! Each lane applies its events as they arrive, in batches of what is
//! waiting, without waiting for the other lanes, and keeps its own
//! checkpoint in the copy. The copy's secondary indexes are dropped while it is
//! filled and built once, sorted, before the catch-up.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, consumer::DeliverPolicy};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgConnection};

use crate::decode::ProjectedEvent;
use crate::runtime::{
    checkpoint, lock_projection, process_batch, Applied, ApplyError, Prefetch, Projection,
};

/// The read-model tables the `read_models` projection owns (and the view over them).
const TABLES: &[&str] = &["agents", "tasks", "task_events"];
const VIEWS: &[&str] = &["task_stats"];

/// Events per transaction and lane when none is given (at most: a lane takes
/// what is waiting). Measured here (2 cores, 500,000 events, 3 lanes, each
/// round of one batch per lane applied before the next): 1,000 →
/// 46,400–48,900 events/s; 2,000, 5,000 and 10,000 → 51,800–52,800 events/s.
pub const DEFAULT_BATCH: usize = 2000;

/// What to do with the copy once it has caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Swap it in for the live projection.
    Swap,
    /// Compare it with the live projection, then drop it.
    Verify,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(String),
    #[error("the copy parked {0} event(s); not swapped (see its dead letters, schema {1})")]
    Parked(i64, String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("NATS: {0}")]
    Nats(String),
}

/// A row that differs between the live projection and the copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub table: String,
    pub id: String,
    /// `only_live`, `only_copy` or `differs`.
    pub kind: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    pub schema: String,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// The stream position the result reflects.
    pub checkpoint: u64,
    pub swapped: bool,
    /// For `verify`: every row that differs (empty when equal).
    pub differences: Vec<Difference>,
}

fn lock_key(projection: &str) -> String {
    format!("sutazai-rebuild:{projection}")
}

/// The projectors' migrations, to create the read-model tables in a schema.
fn schema_sql() -> [&'static str; 3] {
    [
        include_str!("../migrations/20261125100001_read_models.sql"),
        include_str!("../migrations/20261125100002_audit_indexes.sql"),
        include_str!("../migrations/20261125100003_batch_start.sql"),
    ]
}

/// Rebuilds `projection` from the whole stream. `progress` gets (applied
/// events, stream end) after every batch.
pub async fn rebuild(
    pool: &PgPool,
    js: &async_nats::jetstream::Context,
    stream: &str,
    projection: &dyn Projection,
    finish: Finish,
    batch_size: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildReport, RebuildError> {
    let name = projection.name().to_string();
    // One rebuild per projection: a session lock held for the whole run.
    let mut guard: PgConnection = pool.connect_options().connect().await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(lock_key(&name))
        .fetch_one(&mut guard)
        .await?;
    if !got {
        return Err(RebuildError::AlreadyRunning(name));
    }
    drop_stale_copies(&mut guard, &name).await?;
    let schema = format!("rebuild_{name}_{}", chrono::Utc::now().timestamp_millis());
    guard
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await?;
    guard
        .execute(format!("SET search_path TO {schema}").as_str())
        .await?;
    for sql in schema_sql() {
        guard.execute(sql).await?;
    }
    guard.execute("SET search_path TO DEFAULT").await?;
    let indexes = take_secondary_indexes(&mut guard, &schema).await?;

    let lanes: Vec<Lane<'_>> = (0..lane_count())
        .map(|i| Lane {
            projection,
            name: format!("{name}#lane{i}"),
        })
        .collect();
    let copy = copy_pool(pool, &schema, lanes.len()).await?;
    let started = Instant::now();
    let nats = |e: String| RebuildError::Nats(e);
    let mut stream_handle = js
        .get_stream(stream)
        .await
        .map_err(|e| nats(e.to_string()))?;
    let end = stream_handle
        .info()
        .await
        .map_err(|e| nats(e.to_string()))?
        .state
        .last_sequence;
    let messages = stream_handle
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| nats(e.to_string()))?
        .messages()
        .await
        .map_err(|e| nats(e.to_string()))?;
    // Read ahead while the lanes apply.
    let mut messages = Prefetch::new(messages, batch_size * lanes.len() * 2);
    let feed = Feed::new(&lanes, batch_size);
    let mut applied = 0u64;
    let mut position = 0u64;
    // Build until the stream end seen at the start.
    while position < end {
        let n = feed
            .run(&mut messages, &copy, None, end, &mut progress)
            .await?;
        applied += n.0;
        position = n.1.max(position);
    }
    build_indexes(&copy, indexes).await?;

    // Catch up to the live checkpoint with the live projection held, then finish.
    let mut tx = pool.begin().await?;
    lock_projection(&mut tx, &name).await?;
    let live = checkpoint(&mut tx, &name).await?.max(0) as u64;
    while position < live {
        let n = feed
            .run(&mut messages, &copy, Some(live), live, &mut progress)
            .await?;
        applied += n.0;
        position = n.1.max(position);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut report = RebuildReport {
        schema: schema.clone(),
        events: applied,
        seconds,
        events_per_second: applied as f64 / seconds.max(1e-9),
        checkpoint: position,
        ..Default::default()
    };
    match finish {
        Finish::Swap => {
            let parked: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {schema}.dead_letters WHERE status = 'parked'"
            ))
            .fetch_one(&mut *tx)
            .await?;
            if parked > 0 {
                return Err(RebuildError::Parked(parked, schema));
            }
            let retired = format!("retired_{name}_{}", chrono::Utc::now().timestamp_millis());
            tx.execute(format!("CREATE SCHEMA {retired}").as_str())
                .await?;
            for v in VIEWS {
                tx.execute(format!("ALTER VIEW public.{v} SET SCHEMA {retired}").as_str())
                    .await?;
            }
            for t in TABLES {
                tx.execute(format!("ALTER TABLE public.{t} SET SCHEMA {retired}").as_str())
                    .await?;
                tx.execute(format!("ALTER TABLE {schema}.{t} SET SCHEMA public").as_str())
                    .await?;
            }
            for v in VIEWS {
                tx.execute(format!("ALTER VIEW {schema}.{v} SET SCHEMA public").as_str())
                    .await?;
            }
            sqlx::query(
                "INSERT INTO public.projector_checkpoints (projection, stream_sequence, updated_at) \
                 VALUES ($1, $2, now()) ON CONFLICT (projection) DO UPDATE \
                 SET stream_sequence = EXCLUDED.stream_sequence, updated_at = now()",
            )
            .bind(&name)
            .bind(position as i64)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            report.swapped = true;
            guard
                .execute(format!("DROP SCHEMA {retired} CASCADE").as_str())
                .await?;
        }
        Finish::Verify => {
            report.differences = compare(&mut tx, &schema).await?;
            tx.rollback().await?;
        }
    }
    copy.close().await;
    guard
        .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
        .await?;
    Ok(report)
}

/// Lanes a rebuild fills the copy in: one connection each, one more than
/// there are cores, so that Postgres has a lane's statement to run while
/// another lane's batch is decoded and folded. Measured here (2 cores,
/// 500,000 events, batches of 1,000): 2 lanes 38,000, 3 lanes 41,000–41,700,
/// 4 lanes 41,700 events/s.
fn lane_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, usize::from)
        .saturating_add(1)
        .clamp(2, 8)
}

/// The projection as one lane of a rebuild: its own name, so that each lane
/// keeps its own checkpoint and lock in the copy.
struct Lane<'a> {
    projection: &'a dyn Projection,
    name: String,
}

#[async_trait::async_trait]
impl Projection for Lane<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &ProjectedEvent,
    ) -> Result<Applied, ApplyError> {
        self.projection.apply(conn, event).await
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[ProjectedEvent],
    ) -> Result<Vec<Applied>, ApplyError> {
        self.projection.apply_batch(conn, events).await
    }

    async fn flush(&self) -> Result<(), ApplyError> {
        self.projection.flush().await
    }
}

/// The lane of a subject: the same for every event of one aggregate.
fn lane_of(subject: &str, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    subject.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drops the copy's indexes that back no constraint and returns their
/// definitions, to build them once the copy is filled.
async fn take_secondary_indexes(
    conn: &mut PgConnection,
    schema: &str,
) -> sqlx::Result<Vec<String>> {
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexname::text, i.indexdef FROM pg_indexes i WHERE i.schemaname = $1 \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
             WHERE c.connamespace = $1::regnamespace AND c.conname = i.indexname) \
         ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    for (index, _) in &indexes {
        conn.execute(format!("DROP INDEX {}.{}", quote_ident(schema), quote_ident(index)).as_str())
            .await?;
    }
    Ok(indexes.into_iter().map(|(_, def)| def).collect())
}

/// Builds the dropped indexes, as many at once as the copy has connections,
/// each connection taking the next index as it finishes one; the GIN
/// indexes first, since one of them takes longer than all the others
/// together (500,000 events: `tasks_search` 1.28 s, the ten others 1.41 s in
/// all). With the server's `maintenance_work_mem`: 256 MB measured no faster,
/// 1.30–1.35 s against 1.24–1.26 s for all of them.
async fn build_indexes(copy: &PgPool, mut indexes: Vec<String>) -> sqlx::Result<()> {
    let connections = (copy.options().get_max_connections() as usize).max(1);
    // Stable: the GIN indexes first, the others in name order.
    indexes.sort_by_key(|def| !def.contains(" USING gin "));
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(indexes));
    let next = || queue.lock().ok().and_then(|mut q| q.pop_front());
    futures::future::try_join_all((0..connections).map(|_| async {
        let mut conn = copy.acquire().await?;
        while let Some(def) = next() {
            conn.execute(def.as_str()).await?;
        }
        Ok::<_, sqlx::Error>(())
    }))
    .await?;
    Ok(())
}

/// A pool whose sessions see the copy's schema first.
async fn copy_pool(pool: &PgPool, schema: &str, lanes: usize) -> sqlx::Result<PgPool> {
    let schema = schema.to_string();
    PgPoolOptions::new()
        .max_connections(u32::try_from(lanes).unwrap_or(8))
        .after_connect(move |conn, _| {
            let schema = schema.clone();
            Box::pin(async move {
                conn.execute(format!("SET search_path TO {schema}").as_str())
                    .await?;
                Ok(())
            })
        })
        // Read through indexes, plans cached as Postgres chooses (see
        // `service_kit::index_scans`): the copy's tables grow from empty
        // faster than statistics follow. Measured against per-call plans with
        // scans allowed (the copy's setting before): 35,900–36,000 against
        // 32,800–33,400 events/s. `auto` also where the live pool forces
        // generic plans (`service_kit::generic_plans`): the rebuild was
        // measured with it, and its batches are of one fixed size.
        .connect_with(
            service_kit::index_scans((*pool.connect_options()).clone())
                .options([("plan_cache_mode", "auto")]),
        )
        .await
}

type Message = (u64, String, async_nats::HeaderMap, bytes::Bytes);

/// Hands the stream to the lanes. Each lane applies its events as they come,
/// in batches of up to `batch`, without waiting for the other lanes (a lane
/// that finishes a batch starts its next one while the others are still in
/// Postgres); [`Feed::run`] returns once every lane has applied everything
/// handed to it.
struct Feed<'a> {
    lanes: &'a [Lane<'a>],
    batch: usize,
}

impl<'a> Feed<'a> {
    fn new(lanes: &'a [Lane<'a>], batch: usize) -> Self {
        Self { lanes, batch }
    }

    /// Applies the stream up to `target` (or, with `until`, up to `until`
    /// and no further) and returns (applied, last position). `progress` gets
    /// (applied so far in this run, target) now and then.
    async fn run(
        &self,
        messages: &mut Prefetch<jetstream::Message>,
        copy: &PgPool,
        until: Option<u64>,
        target: u64,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<(u64, u64), RebuildError> {
        let applied = std::sync::atomic::AtomicU64::new(0);
        let (senders, receivers): (Vec<_>, Vec<_>) = self
            .lanes
            .iter()
            .map(|_| tokio::sync::mpsc::channel::<Message>(self.batch * 2))
            .unzip();
        let lanes = futures::future::try_join_all(
            self.lanes
                .iter()
                .zip(receivers)
                .map(|(lane, rx)| run_lane(copy, lane, self.batch, rx, &applied)),
        );
        let read = async {
            let mut last = 0u64;
            let mut reported = Instant::now();
            let result = loop {
                if last >= target {
                    break Ok(last);
                }
                let read = messages
                    .next_batch(self.batch * self.lanes.len(), Duration::from_secs(30))
                    .await
                    .map_err(RebuildError::Nats)?;
                if read.is_empty() {
                    break Err(RebuildError::Nats(
                        "no message from the stream for 30 s".into(),
                    ));
                }
                let (mut past_end, mut stopped) = (false, false);
                for m in read {
                    let seq = m
                        .info()
                        .map_err(|e| RebuildError::Nats(e.to_string()))?
                        .stream_sequence;
                    if until.is_some_and(|u| seq > u) {
                        // Past the end: everything up to `until` has been
                        // read; the rest is not applied (the swap holds the
                        // live projection there).
                        past_end = true;
                        break;
                    }
                    last = seq;
                    let lane = lane_of(&m.subject, senders.len());
                    let message = (
                        seq,
                        m.subject.to_string(),
                        m.headers.clone().unwrap_or_default(),
                        m.payload.clone(),
                    );
                    if senders[lane].send(message).await.is_err() {
                        // The lane stopped on an error, which `lanes` returns.
                        stopped = true;
                        break;
                    }
                }
                if stopped {
                    break Ok(last);
                }
                if past_end {
                    break Ok(last.max(until.unwrap_or(0)));
                }
                if reported.elapsed() >= Duration::from_secs(1) {
                    progress(applied.load(std::sync::atomic::Ordering::Relaxed), target);
                    reported = Instant::now();
                }
            };
            // Closing the channels lets each lane apply what it holds and end.
            drop(senders);
            result
        };
        let (last, lanes) = futures::future::join(read, lanes).await;
        lanes?;
        let last = last?;
        let applied = applied.load(std::sync::atomic::Ordering::Relaxed);
        progress(applied, target);
        Ok((applied, last))
    }
}

/// One lane: applies what it is handed, in batches of what is waiting (up to
/// `batch`), until its channel closes.
async fn run_lane(
    copy: &PgPool,
    lane: &Lane<'_>,
    batch: usize,
    mut rx: tokio::sync::mpsc::Receiver<Message>,
    applied: &std::sync::atomic::AtomicU64,
) -> Result<(), RebuildError> {
    let mut pending = Vec::with_capacity(batch);
    while rx.recv_many(&mut pending, batch).await > 0 {
        let outcome = process_batch(copy, lane, 3, &pending).await?;
        applied.fetch_add(outcome.applied, std::sync::atomic::Ordering::Relaxed);
        pending.clear();
    }
    Ok(())
}

/// Drops copies left by aborted rebuilds (we hold the rebuild lock).
async fn drop_stale_copies(conn: &mut PgConnection, projection: &str) -> sqlx::Result<()> {
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'rebuild\\_' || $1 || '\\_%' \
            OR nspname LIKE 'retired\\_' || $1 || '\\_%'",
    )
    .bind(projection)
    .fetch_all(&mut *conn)
    .await?;
    for s in stale {
        tracing::info!(schema = %s, "dropping a copy left by an aborted rebuild");
        conn.execute(format!("DROP SCHEMA {s} CASCADE").as_str())
            .await?;
    }
    Ok(())
}

/// Rows that differ between the live tables and the copy's.
async fn compare(conn: &mut PgConnection, schema: &str) -> sqlx::Result<Vec<Difference>> {
    let keys = [
        ("agents", "id::text"),
        ("tasks", "id::text"),
        ("task_events", "task_id::text || '#' || sequence"),
    ];
    let mut out = Vec::new();
    for (table, key) in keys {
        let strip = if table == "tasks" { " - 'search'" } else { "" };
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT coalesce(l.k, c.k), CASE WHEN l.k IS NULL THEN 'only_copy' \
                 WHEN c.k IS NULL THEN 'only_live' ELSE 'differs' END \
             FROM (SELECT {key} AS k, to_jsonb(t){strip} AS v FROM public.{table} t) l \
             FULL JOIN (SELECT {key} AS k, to_jsonb(t){strip} AS v FROM {schema}.{table} t) c ON l.k = c.k \
             WHERE l.k IS NULL OR c.k IS NULL OR l.v <> c.v ORDER BY 1"
        ))
        .fetch_all(&mut *conn)
        .await?;
        out.extend(rows.into_iter().map(|(id, kind)| Difference {
            table: table.to_string(),
            id,
            kind,
        }));
    }
    Ok(out)
}
