//! Leader election across instances with a Postgres session advisory lock:
//! the lock lives as long as the connection that took it, so a crashed leader
//! releases it when its connection closes and a standby takes over.

use sqlx::postgres::PgPool;
use sqlx::{ConnectOptions, PgConnection};

/// Lock keys, one per singleton role.
pub const RELAY_LOCK: i64 = 0x5355_5441_5a41_0001;

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
