//! Leader election across instances with a Postgres session advisory lock:
//! the lock lives as long as the connection that took it, so a crashed leader
//! releases it when its connection closes and a standby takes over.

use sqlx::postgres::PgPool;
use sqlx::{ConnectOptions, PgConnection};

/// Lock key of the outbox relay.
pub const RELAY_LOCK: i64 = 0x5355_5441_5a41_0001;

/// Lock key of one projection (per consumer prefix), so that one instance
/// applies it at a time and the others stand by.
pub fn projection_lock(prefix: &str, projection: &str) -> i64 {
    // FNV-1a: stable across builds and processes, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("sutazai-projection:{prefix}:{projection}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Checks that a leader's connection (and so its lock) is still alive.
pub async fn still_leading(conn: &mut PgConnection) -> bool {
    sqlx::query("SELECT 1").execute(conn).await.is_ok()
}

/// [`still_leading`] at most once per period: a leader's loop asks before
/// every round, and only a round a period after the last check pays the
/// round trip.
pub struct LockCheck {
    every: std::time::Duration,
    last: std::time::Instant,
}

impl LockCheck {
    /// The first check comes a period from now (the lock was just taken).
    pub fn every(every: std::time::Duration) -> Self {
        Self {
            every,
            last: std::time::Instant::now(),
        }
    }

    pub async fn still_leading(&mut self, conn: &mut PgConnection) -> bool {
        if self.last.elapsed() < self.every {
            return true;
        }
        self.last = std::time::Instant::now();
        still_leading(conn).await
    }
}

/// Opens a dedicated connection (never a pooled one, which would carry the
/// lock back into the pool) and tries to take `key` on it. `Some` holds the
/// lock for as long as the connection is kept open.
pub async fn try_lead(pool: &PgPool, key: i64) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut conn = pool.connect_options().connect().await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut conn)
        .await?;
    Ok(got.then_some(conn))
}
