//! Reads of one task by id, coalesced: concurrent `GET /api/v1/tasks/{id}`
//! share one statement.
//!
//! At most `lanes` statements are in flight. While they are, new reads
//! queue; the next lane to free up takes everything queued (up to
//! [`MAX_BATCH`]) as one `WHERE id = ANY($1)`. A lone read goes out at once —
//! nothing waits for company — so batching costs no latency at low load and,
//! under load, turns many round trips to Postgres (each a wake-up of a server
//! process on both ends) into one.
//!
//! Each lane is a connection of the readers' own pool, with sequential scans
//! priced out (`enable_seqscan = off`): the two statements stay prepared and
//! keep a generic plan (parsed and planned once per connection), and that
//! plan reads through the primary key however small the table was when it
//! was made (see [`service_kit::index_scans`] for why that matters).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use schemas::query::TaskView;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::db;
use crate::error::ApiError;

/// Most ids in one statement.
pub const MAX_BATCH: usize = 256;

type Answer = Result<Option<TaskView>, ApiError>;

struct Read {
    id: Uuid,
    reply: oneshot::Sender<Answer>,
}

/// The handle the handlers read through; the dispatcher stops when the last
/// handle is dropped.
pub struct TaskReads {
    queue: mpsc::Sender<Read>,
    statements: Arc<AtomicU64>,
}

/// A pool of up to `connections` read-only sessions (as the query side's main
/// pool) with sequential scans priced out, opened as they are needed: its
/// statements stay prepared with a generic plan that reads through the
/// primary key (see [`service_kit::index_scans`]).
pub(crate) fn index_read_pool(options: PgConnectOptions, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .test_before_acquire(false)
        .connect_lazy_with(
            service_kit::index_scans(options).options([("default_transaction_read_only", "on")]),
        )
}

impl TaskReads {
    /// Starts the dispatcher over a pool of `lanes` connections to the
    /// database of `options` (opened as reads need them).
    pub fn start(options: PgConnectOptions, lanes: u32) -> Self {
        let lanes = lanes.max(1);
        let pool = index_read_pool(options, lanes);
        // Requests in flight are bounded by the server's shedding, so this
        // queue never holds more than that; the bound is a backstop.
        let (queue, rx) = mpsc::channel(4096);
        let statements = Arc::new(AtomicU64::new(0));
        tokio::spawn(dispatch(
            pool,
            rx,
            Arc::new(Semaphore::new(lanes as usize)),
            statements.clone(),
        ));
        Self { queue, statements }
    }

    /// Statements sent so far (each answering one or more reads).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// The task `id` as its view, or `None` when there is no such task.
    pub async fn task(&self, id: Uuid) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Read { id, reply })
            .await
            .map_err(|_| ApiError::Unavailable("the task reader has stopped".into()))?;
        answer
            .await
            .map_err(|_| ApiError::Internal("a batched task read was dropped".into()))?
    }
}

async fn dispatch(
    pool: PgPool,
    mut queue: mpsc::Receiver<Read>,
    lanes: Arc<Semaphore>,
    statements: Arc<AtomicU64>,
) {
    loop {
        let Ok(lane) = lanes.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(read) => batch.push(read),
                Err(_) => break,
            }
        }
        statements.fetch_add(1, Ordering::Relaxed);
        let pool = pool.clone();
        tokio::spawn(async move {
            answer(&pool, batch).await;
            drop(lane);
        });
    }
}

/// Reads the batch's tasks and replies to each read. A failed statement
/// fails every read in it, each with the same error.
async fn answer(pool: &PgPool, batch: Vec<Read>) {
    if let [_] = batch.as_slice() {
        for read in batch {
            let _ = read.reply.send(db::task(pool, read.id).await);
        }
        return;
    }
    // The same id may be read twice at once: one row, several replies.
    let mut waiting: HashMap<Uuid, Vec<oneshot::Sender<Answer>>> =
        HashMap::with_capacity(batch.len());
    for read in batch {
        waiting.entry(read.id).or_default().push(read.reply);
    }
    let ids: Vec<Uuid> = waiting.keys().copied().collect();
    match db::tasks(pool, &ids).await {
        Ok(rows) => {
            for view in rows {
                let Some(mut replies) = waiting.remove(&view.id) else {
                    continue;
                };
                let last = replies.pop();
                for reply in replies {
                    let _ = reply.send(Ok(Some(view.clone())));
                }
                if let Some(reply) = last {
                    let _ = reply.send(Ok(Some(view)));
                }
            }
            for reply in waiting.into_values().flatten() {
                let _ = reply.send(Ok(None));
            }
        }
        Err(e) => {
            for reply in waiting.into_values().flatten() {
                let _ = reply.send(Err(e.same()));
            }
        }
    }
}
