//! Parked events: listing them, re-driving them after a fix, discarding one
//! with a recorded reason.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};

use crate::decode::{decode, ProjectedEvent};
use crate::runtime::{apply_with_retries, lock_projection, Applied, Projection};

/// A message as received, to be parked.
pub struct Parked<'a> {
    pub projection: &'a str,
    pub stream_sequence: u64,
    pub subject: &'a str,
    pub headers: &'a async_nats::HeaderMap,
    pub body: &'a [u8],
}

fn headers_json(h: &async_nats::HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, values) in h.iter() {
        let v: Vec<Value> = values
            .iter()
            .map(|v| Value::String(v.to_string()))
            .collect();
        map.insert(name.to_string(), Value::Array(v));
    }
    Value::Object(map)
}

/// Stores a parked message; returns its dead-letter id. Idempotent per
/// (projection, stream_sequence).
pub async fn park(
    conn: &mut PgConnection,
    message: &Parked<'_>,
    event: Option<&ProjectedEvent>,
    error: &str,
    attempts: u32,
    blocked_by: Option<i64>,
) -> sqlx::Result<i64> {
    let (aggregate_type, aggregate_id, sequence, event_type) = match event {
        Some(e) => (
            Some(e.envelope.aggregate_type.clone()),
            Some(e.envelope.aggregate_id.clone()),
            Some(e.envelope.sequence),
            Some(e.envelope.event_type.clone()),
        ),
        None => {
            let agg = crate::decode::aggregate_of_subject(message.subject);
            (
                agg.as_ref().map(|a| a.0.clone()),
                agg.map(|a| a.1),
                None,
                None,
            )
        }
    };
    sqlx::query_scalar(
        "INSERT INTO dead_letters (projection, stream_sequence, subject, aggregate_type, aggregate_id, \
             sequence, event_type, raw, headers, error, attempts, blocked_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (projection, stream_sequence) DO UPDATE SET error = EXCLUDED.error \
         RETURNING id",
    )
    .bind(message.projection)
    .bind(message.stream_sequence as i64)
    .bind(message.subject)
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .bind(event_type)
    .bind(message.body)
    .bind(headers_json(message.headers))
    .bind(error)
    .bind(attempts as i32)
    .bind(blocked_by)
    .fetch_one(conn)
    .await
}

/// One dead letter, as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub projection: String,
    pub stream_sequence: i64,
    pub subject: String,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub sequence: Option<i64>,
    pub event_type: Option<String>,
    pub error: String,
    pub attempts: i32,
    pub blocked_by: Option<i64>,
    pub status: String,
    pub parked_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
}

/// Dead letters of a projection (or all), parked ones only unless `all`.
pub async fn list(
    pool: &PgPool,
    projection: Option<&str>,
    all: bool,
) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(
        "SELECT id, projection, stream_sequence, subject, aggregate_type, aggregate_id, sequence, \
                event_type, error, attempts, blocked_by, status, parked_at, resolved_at, resolution \
         FROM dead_letters WHERE ($1::text IS NULL OR projection = $1) AND ($2 OR status = 'parked') \
         ORDER BY id",
    )
    .bind(projection)
    .bind(all)
    .fetch_all(pool)
    .await
}

/// Counts of parked dead letters per projection.
pub async fn parked_counts(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT projection, count(*) FROM dead_letters WHERE status = 'parked' GROUP BY projection",
    )
    .fetch_all(pool)
    .await
}

/// Marks one parked dead letter discarded, with the reason recorded. Events
/// parked behind it stay parked until the next re-drive.
pub async fn discard(pool: &PgPool, id: i64, reason: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE dead_letters SET status = 'discarded', resolved_at = now(), resolution = $2 \
         WHERE id = $1 AND status = 'parked'",
    )
    .bind(id)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(sqlx::FromRow)]
struct ParkedRow {
    id: i64,
    stream_sequence: i64,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    raw: Vec<u8>,
}

/// What a re-drive did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    pub applied: u64,
    pub still_parked: u64,
}

/// Applies the parked events of `projection` (of one aggregate, or all) in
/// stream order per aggregate, stopping at the first one of an aggregate that
/// still fails. Runs under the projection's lock, so no batch interleaves.
pub async fn redrive(
    pool: &PgPool,
    projection: &dyn Projection,
    aggregate_id: Option<&str>,
    max_attempts: u32,
) -> sqlx::Result<RedriveReport> {
    let name = projection.name();
    let mut tx = pool.begin().await?;
    lock_projection(&mut tx, name).await?;
    let rows: Vec<ParkedRow> = sqlx::query_as(
        "SELECT id, stream_sequence, aggregate_type, aggregate_id, raw FROM dead_letters \
         WHERE projection = $1 AND status = 'parked' AND ($2::text IS NULL OR aggregate_id = $2) \
         ORDER BY aggregate_type, aggregate_id, stream_sequence",
    )
    .bind(name)
    .bind(aggregate_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut report = RedriveReport::default();
    let mut blocked: Option<(Option<String>, Option<String>, i64)> = None;
    for ParkedRow {
        id,
        stream_sequence: seq,
        aggregate_type: agg_type,
        aggregate_id: agg_id,
        raw,
    } in rows
    {
        if let Some((t, a, head)) = &blocked {
            if *t == agg_type && *a == agg_id {
                sqlx::query("UPDATE dead_letters SET blocked_by = $2 WHERE id = $1")
                    .bind(id)
                    .bind(head)
                    .execute(&mut *tx)
                    .await?;
                report.still_parked += 1;
                continue;
            }
        }
        let result = match decode(seq as u64, &raw) {
            Err(e) => Err((e.to_string(), 1)),
            Ok(event) => apply_with_retries(&mut tx, projection, &event, max_attempts)
                .await?
                .map(|_: Applied| ()),
        };
        match result {
            Ok(()) => {
                sqlx::query(
                    "UPDATE dead_letters SET status = 'redriven', resolved_at = now(), \
                     resolution = 'applied by re-drive', blocked_by = NULL WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                report.applied += 1;
            }
            Err((error, attempts)) => {
                sqlx::query(
                    "UPDATE dead_letters SET error = $2, attempts = attempts + $3, blocked_by = NULL \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&error)
                .bind(attempts as i32)
                .execute(&mut *tx)
                .await?;
                blocked = Some((agg_type, agg_id, id));
                report.still_parked += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(report)
}
