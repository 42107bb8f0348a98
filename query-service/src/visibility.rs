//! Read-your-writes waits (`min_version`), checked together.
//!
//! A read that must see version `v` of a row registers a waiter and then
//! reads the row once itself. If the row is not there yet, one checker task
//! answers every waiter: after each committed batch of the read-model
//! projection (a Postgres notification) — and every [`POLL`] as a fallback,
//! since notifications are not durable — it reads the versions of all
//! waited-for rows in one statement per table and releases the waiters whose
//! version has arrived.
//!
//! A read parked for its version gives back its in-flight slot (see
//! `service_kit::shed`), up to `QUERY_MAX_PARKED_READS` of them: waiting is
//! not work, and at 1,000 read-your-writes reads a second with the
//! projection a few hundred milliseconds behind, the waiting reads alone
//! filled the 512 slots, and 2 % of reads were shed with `503 overloaded`
//! (`loadgen`, 2026-11-27), each costing its client a second.
//!
//! One statement per commit, however many readers wait: with a waiter
//! re-reading its own row on every commit, hundreds of waiters turned each
//! commit into hundreds of queries, which slowed the projection they were
//! waiting for.
//!
//! For tasks the checker reads the whole rows, and a released waiter gets
//! the row it was waiting for from that read: a `GET /tasks/{id}?min_version`
//! that had to wait is answered without reading its row a second time (the
//! second read went through the batched task reads, a queue and a statement
//! more on the path from the projection's commit to the answer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemas::query::TaskView;
use sqlx::PgPool;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::db::{self, Table};
use crate::error::ApiError;

/// How often waiters are checked when no commit notification arrives.
pub const POLL: Duration = Duration::from_millis(50);

struct Waiter {
    min: i64,
    reached: oneshot::Sender<Arrived>,
}

/// What the checker read when a waiter's version arrived.
#[derive(Debug, Clone)]
pub enum Arrived {
    /// The row's version (agents).
    Version(i64),
    /// The task row itself.
    Task(Box<TaskView>),
}

impl Arrived {
    pub fn version(&self) -> i64 {
        match self {
            Self::Version(v) => *v,
            Self::Task(t) => t.version,
        }
    }
}

/// A row a read can wait for: its version, and the row itself out of what
/// the checker read (`None`: read it again).
pub trait Versioned: Sized {
    fn version(&self) -> i64;
    fn from_arrived(arrived: Arrived) -> Option<Self>;
}

/// Just the version.
impl Versioned for i64 {
    fn version(&self) -> i64 {
        *self
    }

    fn from_arrived(arrived: Arrived) -> Option<Self> {
        Some(arrived.version())
    }
}

impl Versioned for TaskView {
    fn version(&self) -> i64 {
        self.version
    }

    fn from_arrived(arrived: Arrived) -> Option<Self> {
        match arrived {
            Arrived::Task(view) => Some(*view),
            Arrived::Version(_) => None,
        }
    }
}

type Waiters = HashMap<(Table, Uuid), Vec<Waiter>>;

/// The waiters and the checker that releases them.
pub struct Visibility {
    pool: PgPool,
    /// The checker's own connection: its statement stays prepared, planned
    /// once, through the primary key (see [`db::versions`]).
    checker: PgPool,
    waiters: Mutex<Waiters>,
    /// Reads parked now without an in-flight slot, and the bound on them.
    parked: AtomicUsize,
    max_parked: usize,
}

/// A read counted as parked until dropped.
struct Parked<'a>(&'a AtomicUsize);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Visibility {
    /// Starts the checker; `commits` ticks after each committed read-model batch.
    /// At most `max_parked` reads wait without an in-flight slot.
    pub fn start(pool: PgPool, commits: watch::Receiver<u64>, max_parked: usize) -> Arc<Self> {
        let checker = crate::reads::index_read_pool((*pool.connect_options()).clone(), 1);
        let this = Arc::new(Self {
            pool,
            checker,
            waiters: Mutex::new(HashMap::new()),
            parked: AtomicUsize::new(0),
            max_parked,
        });
        tokio::spawn(check_loop(Arc::downgrade(&this), commits));
        this
    }

    /// Waits until the row `id` of `table` is at `min` or later, or
    /// `timeout` has passed; returns the version seen last.
    pub async fn wait(
        &self,
        table: Table,
        id: Uuid,
        min: i64,
        timeout: Duration,
    ) -> Result<Option<i64>, ApiError> {
        self.wait_for(table, id, min, timeout, || {
            db::version(&self.pool, table, id)
        })
        .await
    }

    /// Like [`Self::wait`], reading the row with `read`: a caller that wants
    /// the row gets it from the read that saw it arrive — its own first
    /// read, or the checker's (see [`Versioned::from_arrived`]). Returns the
    /// row read last, whatever its version.
    pub async fn wait_for<T: Versioned, Fut>(
        &self,
        table: Table,
        id: Uuid,
        min: i64,
        timeout: Duration,
        read: impl Fn() -> Fut,
    ) -> Result<Option<T>, ApiError>
    where
        Fut: std::future::Future<Output = Result<Option<T>, ApiError>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        // Registered before the first read: a commit that lands after the
        // read is checked for this waiter too.
        let (reached, signal) = oneshot::channel();
        self.lock()
            .entry((table, id))
            .or_default()
            .push(Waiter { min, reached });
        let row = read().await?;
        if row.as_ref().is_some_and(|r| r.version() >= min) {
            return Ok(row);
        }
        let parked = self.park();
        // A dropped receiver is cleaned up by the checker's next round.
        let seen = tokio::time::timeout_at(deadline, signal).await;
        drop(parked);
        if let Ok(Ok(row)) = seen {
            if let Some(row) = T::from_arrived(row) {
                return Ok(Some(row));
            }
        }
        read().await
    }

    /// Counts the calling read as parked and gives back its in-flight slot,
    /// unless `max_parked` reads are parked already.
    fn park(&self) -> Option<Parked<'_>> {
        if self.parked.fetch_add(1, Ordering::Relaxed) >= self.max_parked {
            self.parked.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        service_kit::release_in_flight();
        Some(Parked(&self.parked))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every change is one insert or remove), so a poisoned lock is used.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One round: drops abandoned waiters, reads the versions of the rest
    /// and releases those whose version has arrived.
    async fn check(&self) {
        let mut wanted: HashMap<Table, Vec<Uuid>> = HashMap::new();
        {
            let mut waiters = self.lock();
            waiters.retain(|_, list| {
                list.retain(|w| !w.reached.is_closed());
                !list.is_empty()
            });
            for (table, id) in waiters.keys() {
                wanted.entry(*table).or_default().push(*id);
            }
        }
        for (table, ids) in wanted {
            let rows: Result<Vec<(Uuid, Arrived)>, ApiError> = match table {
                Table::Tasks => db::tasks(&self.checker, &ids).await.map(|rows| {
                    rows.into_iter()
                        .map(|t| (t.id, Arrived::Task(Box::new(t))))
                        .collect()
                }),
                Table::Agents => db::versions(&self.checker, table, &ids).await.map(|rows| {
                    rows.into_iter()
                        .map(|(id, v)| (id, Arrived::Version(v)))
                        .collect()
                }),
            };
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "min_version check failed; retrying");
                    continue;
                }
            };
            let mut waiters = self.lock();
            for (id, row) in rows {
                let Some(list) = waiters.get_mut(&(table, id)) else {
                    continue;
                };
                let version = row.version();
                let (done, wait): (Vec<Waiter>, Vec<Waiter>) =
                    list.drain(..).partition(|w| w.min <= version);
                *list = wait;
                for w in done {
                    let _ = w.reached.send(row.clone());
                }
            }
        }
    }
}

async fn check_loop(this: std::sync::Weak<Visibility>, mut commits: watch::Receiver<u64>) {
    let mut notified = true;
    loop {
        if notified {
            tokio::select! {
                changed = commits.changed() => notified = changed.is_ok(),
                _ = tokio::time::sleep(POLL) => {}
            }
        } else {
            tokio::time::sleep(POLL).await;
        }
        let Some(this) = this.upgrade() else {
            return;
        };
        if !this.lock().is_empty() {
            this.check().await;
        }
    }
}
