//! Group commit: the commands that are ready at the same moment share one
//! Postgres transaction.
//!
//! cqrs-es decides what a command commits (its events, and a snapshot every
//! `snapshot_every` events); this repository only changes how that reaches
//! Postgres. Each `persist` becomes a job for a committer task, which takes
//! every job that is waiting (up to [`MAX_BATCH_EVENTS`] events), inserts all
//! their events with one multi-row `INSERT`, writes their snapshots and
//! commits once; then it answers each job. A command is answered only after
//! the transaction holding its events has committed, so an acknowledged
//! command is as durable as before, and a crash before the commit loses only
//! commands that were never acknowledged.
//!
//! Jobs are independent, so one job's conflict must not fail the others: when
//! a batch of several jobs fails (a duplicate key is the optimistic lock
//! refusing a command that decided on a stale version), it is rolled back and
//! each job runs again in a transaction of its own, which gives each its own
//! answer.
//!
//! When nothing else is waiting, a job is committed at once. A batch with no
//! snapshot due is one `INSERT` outside a transaction block (atomic by
//! itself, committed with its WAL flush): one round trip instead of BEGIN,
//! INSERT and COMMIT. Under load, jobs queue
//! while up to [`IN_FLIGHT`] batches are in Postgres and the next batch takes
//! them all: a few round trips and one WAL flush for many commands.

use std::sync::Arc;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// The most events one transaction inserts.
pub const MAX_BATCH_EVENTS: usize = 512;
/// Batches in Postgres at once. One: the jobs that arrive while a batch
/// inserts and waits for its WAL flush all go into the next. Two (until
/// 2026-11-28) let the next batch insert during the flush, but split the
/// queue into twice as many smaller batches: at 1,000 commands/s, 15,365 /
/// 17,976 event inserts in 30 s (6.9 / 6.8 s of Postgres executing them)
/// against 12,347 / 13,617 (5.6 / 5.5 s) with one, and no fewer commands a
/// second at 16 or 64 clients (`loadgen --parts commands`, alternated).
pub const IN_FLIGHT: usize = 1;

/// A snapshot to write with the events: (aggregate id, aggregate, snapshot
/// number), as cqrs-es hands it over. Number 1 inserts the row; a later one
/// updates it if it still holds the previous number.
type SnapshotUpdate = (String, Value, usize);

struct Job {
    aggregate_type: &'static str,
    events: Vec<SerializedEvent>,
    snapshot: Option<SnapshotUpdate>,
    reply: oneshot::Sender<Result<(), PersistenceError>>,
}

/// Loads through postgres-es; persists through the group committer.
pub struct GroupCommitRepository {
    loads: PostgresEventRepository,
    jobs: mpsc::UnboundedSender<Job>,
}

/// Starts the committer task for `pool` and returns a handle that makes
/// repositories feeding it. The task ends when every repository is dropped.
#[derive(Clone)]
pub struct GroupCommitter {
    pool: PgPool,
    jobs: mpsc::UnboundedSender<Job>,
}

impl GroupCommitter {
    /// Must be called inside a Tokio runtime.
    pub fn start(pool: PgPool) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(pool.clone(), queue));
        Self { pool, jobs }
    }

    pub fn repository(&self) -> GroupCommitRepository {
        GroupCommitRepository {
            loads: PostgresEventRepository::new(self.pool.clone()),
            jobs: self.jobs.clone(),
        }
    }
}

async fn run(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut events = first.events.len();
        let mut batch = vec![first];
        while events < MAX_BATCH_EVENTS {
            match queue.try_recv() {
                Ok(job) => {
                    events += job.events.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            commit_batch(&pool, batch).await;
            drop(slot);
        });
    }
}

/// Commits `batch` in one transaction, or, if that fails and it holds more
/// than one job, each job in its own.
async fn commit_batch(pool: &PgPool, batch: Vec<Job>) {
    match write(pool, &batch).await {
        Ok(()) => {
            for job in batch {
                let _ = job.reply.send(Ok(()));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
        }
        Err(_) => {
            for job in batch {
                let result = write(pool, std::slice::from_ref(&job)).await;
                let _ = job.reply.send(result);
            }
        }
    }
}

/// One commit: every job's events in one `INSERT`, then their snapshots (in
/// one transaction when there are any).
async fn write(pool: &PgPool, jobs: &[Job]) -> Result<(), PersistenceError> {
    let rows: usize = jobs.iter().map(|j| j.events.len()).sum();
    let mut types = Vec::with_capacity(rows);
    let mut ids = Vec::with_capacity(rows);
    let mut sequences = Vec::with_capacity(rows);
    let mut event_types = Vec::with_capacity(rows);
    let mut versions = Vec::with_capacity(rows);
    let mut payloads = Vec::with_capacity(rows);
    let mut metadata = Vec::with_capacity(rows);
    for job in jobs {
        for e in &job.events {
            types.push(job.aggregate_type);
            ids.push(e.aggregate_id.as_str());
            sequences.push(e.sequence as i64);
            event_types.push(e.event_type.as_str());
            versions.push(e.event_version.as_str());
            payloads.push(e.payload.to_string());
            metadata.push(e.metadata.to_string());
        }
    }
    // The unnests yield the rows in array order, which is the order the
    // hash-chain trigger needs within one aggregate; in a select list they
    // run in lockstep and stream their rows (`FROM UNNEST(…)` of several
    // arrays would first materialise them all). Payloads go through jsonb,
    // as postgres-es's own insert does, so the stored text (and so each
    // event's hash) has the same form either way.
    let insert = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) \
         SELECT t, i, s, e, v, p::jsonb::json, m::jsonb::json \
         FROM (SELECT unnest($1::text[]) AS t, unnest($2::text[]) AS i, unnest($3::bigint[]) AS s, \
                      unnest($4::text[]) AS e, unnest($5::text[]) AS v, unnest($6::text[]) AS p, \
                      unnest($7::text[]) AS m) u",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&sequences)
    .bind(&event_types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadata);
    if jobs.iter().all(|j| j.snapshot.is_none()) {
        // One statement is atomic by itself: outside a transaction block it
        // commits, and waits for the WAL flush, as the transaction did —
        // without the BEGIN and COMMIT round trips around it.
        if rows > 0 {
            insert.execute(pool).await.map_err(db_error)?;
        }
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(db_error)?;
    if rows > 0 {
        insert.execute(&mut *tx).await.map_err(db_error)?;
    }
    for job in jobs {
        if let Some(snapshot) = &job.snapshot {
            write_snapshot(&mut tx, job, snapshot).await?;
        }
    }
    tx.commit().await.map_err(db_error)
}

async fn write_snapshot(
    tx: &mut Transaction<'_, Postgres>,
    job: &Job,
    (aggregate_id, aggregate, number): &SnapshotUpdate,
) -> Result<(), PersistenceError> {
    let last_sequence = job.events.last().map_or(0, |e| e.sequence as i64);
    let number = *number as i64;
    if number == 1 {
        sqlx::query(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(job.aggregate_type)
        .bind(aggregate_id)
        .bind(last_sequence)
        .bind(number)
        .bind(aggregate)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        return Ok(());
    }
    let updated = sqlx::query(
        "UPDATE snapshots SET last_sequence = $3, payload = $5, current_snapshot = $4 \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND current_snapshot = $4 - 1",
    )
    .bind(job.aggregate_type)
    .bind(aggregate_id)
    .bind(last_sequence)
    .bind(number)
    .bind(aggregate)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    match updated.rows_affected() {
        1 => Ok(()),
        _ => Err(PersistenceError::OptimisticLockError),
    }
}

/// A duplicate key is the optimistic lock: someone else committed that
/// version first. Mapped as postgres-es maps it.
fn db_error(e: sqlx::Error) -> PersistenceError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            PersistenceError::ConnectionError(Box::new(e))
        }
        _ => PersistenceError::UnknownError(Box::new(e)),
    }
}

impl PersistedEventRepository for GroupCommitRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.loads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.loads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.loads.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let stopped = || PersistenceError::UnknownError("the group committer has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                aggregate_type: A::TYPE,
                events: events.to_vec(),
                snapshot: snapshot_update,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.loads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.loads.stream_all_events::<A>().await
    }
}
