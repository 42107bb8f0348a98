//! Audit reads over the event store of record: an aggregate's history and
//! its state at a version or a time, what one request caused (a correlation
//! id), JSON Lines export, and verification of the tamper-evident hash chain.

use std::io::Write;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use schemas::decode::DomainEvent;
use schemas::envelope::metadata_keys;
use schemas::state::{AgentState, TaskState};
use schemas::{upcast, AgentEvent, TaskEvent};

/// One stored event as an auditor sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub actor: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub request_id: Option<String>,
    pub hash: Option<String>,
    pub payload: Value,
}

#[derive(sqlx::FromRow)]
struct Row {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
    hash: Option<String>,
}

impl From<Row> for AuditEvent {
    fn from(r: Row) -> Self {
        let meta = |k: &str| {
            r.metadata
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Self {
            occurred_at: meta(metadata_keys::OCCURRED_AT)
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
            actor: meta(metadata_keys::ACTOR),
            correlation_id: meta(metadata_keys::CORRELATION_ID),
            causation_id: meta(metadata_keys::CAUSATION_ID),
            request_id: meta(metadata_keys::REQUEST_ID),
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            hash: r.hash,
            payload: r.payload,
        }
    }
}

const COLUMNS: &str =
    "aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash";

/// Every event of one aggregate, in order.
pub async fn history(
    pool: &PgPool,
    aggregate_type: &str,
    id: &str,
) -> sqlx::Result<Vec<AuditEvent>> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
    ))
    .bind(aggregate_type)
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(AuditEvent::from).collect())
}

/// Every event that carries `correlation_id`, across aggregates, in the
/// order they happened.
pub async fn trace(pool: &PgPool, correlation_id: &str) -> sqlx::Result<Vec<AuditEvent>> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM events WHERE metadata ->> 'correlation_id' = $1 \
         ORDER BY metadata ->> 'occurred_at', aggregate_type, aggregate_id, sequence"
    ))
    .bind(correlation_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(AuditEvent::from).collect())
}

/// A point in an aggregate's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Version(i64),
    Time(DateTime<Utc>),
}

impl std::str::FromStr for AsOf {
    type Err = String;

    /// A version number, or an RFC 3339 time.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(v) = s.parse::<i64>() {
            return if v >= 0 {
                Ok(Self::Version(v))
            } else {
                Err("a version is 0 or more".into())
            };
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self::Time(t.with_timezone(&Utc)))
            .map_err(|_| format!("{s:?} is neither a version nor an RFC 3339 time"))
    }
}

fn included(e: &AuditEvent, as_of: AsOf) -> bool {
    match as_of {
        AsOf::Version(v) => e.sequence <= v,
        AsOf::Time(t) => e.occurred_at.is_some_and(|at| at <= t),
    }
}

/// The folded state of an aggregate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum State {
    Task(TaskState),
    Agent(AgentState),
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event {aggregate_id}#{sequence} cannot be read: {reason}")]
    Unreadable {
        aggregate_id: String,
        sequence: i64,
        reason: String,
    },
    #[error("unknown aggregate type {0:?}")]
    UnknownAggregate(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

fn typed(e: &AuditEvent) -> Result<DomainEvent, AuditError> {
    let unreadable = |reason: String| AuditError::Unreadable {
        aggregate_id: e.aggregate_id.clone(),
        sequence: e.sequence,
        reason,
    };
    let payload = upcast::upcast(&e.event_type, &e.event_version, e.payload.clone())
        .map_err(|x| unreadable(x.to_string()))?;
    match e.aggregate_type.as_str() {
        schemas::subjects::TASK => serde_json::from_value::<TaskEvent>(payload)
            .map(DomainEvent::Task)
            .map_err(|x| unreadable(x.to_string())),
        schemas::subjects::AGENT => serde_json::from_value::<AgentEvent>(payload)
            .map(DomainEvent::Agent)
            .map_err(|x| unreadable(x.to_string())),
        other => Err(AuditError::UnknownAggregate(other.to_string())),
    }
}

/// Folds `events` (one aggregate's history) up to `as_of`.
pub fn state_at(
    aggregate_type: &str,
    events: &[AuditEvent],
    as_of: AsOf,
) -> Result<State, AuditError> {
    let mut task = TaskState::default();
    let mut agent = AgentState::default();
    for e in events.iter().filter(|e| included(e, as_of)) {
        match typed(e)? {
            DomainEvent::Task(t) => task.apply(e.sequence, &t),
            DomainEvent::Agent(a) => agent.apply(e.sequence, &a),
        }
    }
    match aggregate_type {
        schemas::subjects::TASK => Ok(State::Task(task)),
        schemas::subjects::AGENT => Ok(State::Agent(agent)),
        other => Err(AuditError::UnknownAggregate(other.to_string())),
    }
}

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Writes the matching events as JSON Lines; returns how many. `progress`
/// is called every 1,000 events.
pub async fn export(
    pool: &PgPool,
    filter: &ExportFilter,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, AuditError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE ($1::text IS NULL OR aggregate_type = $1) \
           AND ($2::text IS NULL OR aggregate_id = $2) AND ($3::text IS NULL OR event_type = $3) \
           AND ($4::timestamptz IS NULL OR (metadata ->> 'occurred_at')::timestamptz >= $4) \
           AND ($5::timestamptz IS NULL OR (metadata ->> 'occurred_at')::timestamptz < $5) \
         ORDER BY aggregate_type, aggregate_id, sequence"
    );
    let mut rows = sqlx::query_as::<_, Row>(&sql)
        .bind(&filter.aggregate_type)
        .bind(&filter.aggregate_id)
        .bind(&filter.event_type)
        .bind(filter.since)
        .bind(filter.until)
        .fetch(pool);
    let mut n = 0u64;
    while let Some(row) = rows.try_next().await? {
        serde_json::to_writer(&mut *out, &AuditEvent::from(row)).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        n += 1;
        if n.is_multiple_of(1000) {
            progress(n);
        }
    }
    out.flush()?;
    Ok(n)
}

/// A place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub reason: String,
}

/// What a chain verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub events_checked: u64,
    pub aggregates_checked: u64,
    /// The first broken link of each aggregate whose chain does not hold.
    pub broken: Vec<BrokenLink>,
}

/// The hash the store computes (`event_hash_of` in the migrations), recomputed
/// here independently of the database.
pub fn event_hash(prev: Option<&str>, r: &ChainRow) -> String {
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        prev.unwrap_or(""),
        r.aggregate_type,
        r.aggregate_id,
        r.sequence,
        r.event_type,
        r.event_version,
        r.payload,
        r.metadata
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// An event as hashed: `payload` and `metadata` exactly as stored (text).
#[derive(Debug, sqlx::FromRow)]
pub struct ChainRow {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub hash: Option<String>,
}

/// Walks the whole store, aggregate by aggregate, recomputing each link.
/// `progress` is called every 1,000 events.
pub async fn verify_chain(
    pool: &PgPool,
    mut progress: impl FnMut(u64),
) -> sqlx::Result<ChainReport> {
    let mut rows = sqlx::query_as::<_, ChainRow>(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, \
                payload::text AS payload, metadata::text AS metadata, hash \
         FROM events ORDER BY aggregate_type, aggregate_id, sequence",
    )
    .fetch(pool);
    let mut report = ChainReport::default();
    let mut current: Option<(String, String)> = None;
    let mut prev: Option<String> = None;
    let mut expected_seq = 1;
    let mut broken_here = false;
    while let Some(r) = rows.try_next().await? {
        let key = (r.aggregate_type.clone(), r.aggregate_id.clone());
        if current.as_ref() != Some(&key) {
            current = Some(key);
            prev = None;
            expected_seq = 1;
            broken_here = false;
            report.aggregates_checked += 1;
        }
        report.events_checked += 1;
        if report.events_checked.is_multiple_of(1000) {
            progress(report.events_checked);
        }
        let reason = if r.sequence != expected_seq {
            Some(format!(
                "expected sequence {expected_seq}, found {} (an event is missing)",
                r.sequence
            ))
        } else {
            match &r.hash {
                None => Some("no hash stored".to_string()),
                Some(stored) if *stored != event_hash(prev.as_deref(), &r) => Some(
                    "content does not match its hash (edited after it was written)".to_string(),
                ),
                Some(_) => None,
            }
        };
        if let (Some(reason), false) = (reason, broken_here) {
            broken_here = true;
            report.broken.push(BrokenLink {
                aggregate_type: r.aggregate_type.clone(),
                aggregate_id: r.aggregate_id.clone(),
                sequence: r.sequence,
                reason,
            });
        }
        prev = r.hash.clone();
        expected_seq = r.sequence + 1;
    }
    Ok(report)
}
