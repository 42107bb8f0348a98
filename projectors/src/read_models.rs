//! The Postgres read models `agents`, `tasks` and `task_events` (and the
//! `task_stats` view over `tasks`), kept by the `read_models` projection.
//!
//! Each row carries its aggregate's `version` (last applied sequence). An
//! event is applied only if it is exactly the next one: an older or equal
//! sequence is a duplicate and skipped, a gap is refused (and so parked),
//! which keeps every row equal to a fold of its aggregate's events.
//!
//! A batch is applied in three statements whatever its size: the rows it
//! touches are read at once, every event is folded into them in memory (in
//! stream order, each guarded by the row's version), and the changed rows and
//! the new history rows are written back at once. An event that does not fit
//! fails the whole batch, which the runtime then re-runs one event at a time
//! so that only that event is parked.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use schemas::events::*;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::decode::{DomainEvent, ProjectedEvent};
use crate::runtime::{Applied, ApplyError, Projection};

/// Name of this projection (consumer, checkpoint, dead letters).
pub const NAME: &str = "read_models";

pub struct ReadModels;

#[async_trait::async_trait]
impl Projection for ReadModels {
    fn name(&self) -> &str {
        NAME
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &ProjectedEvent,
    ) -> Result<Applied, ApplyError> {
        let applied = self.apply_batch(conn, std::slice::from_ref(event)).await?;
        Ok(applied.first().copied().unwrap_or(Applied::Skipped))
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[ProjectedEvent],
    ) -> Result<Vec<Applied>, ApplyError> {
        let mut batch = Batch::load(conn, events).await?;
        let applied = events
            .iter()
            .map(|e| batch.fold(e))
            .collect::<Result<Vec<_>, _>>()?;
        batch.write(conn).await?;
        Ok(applied)
    }
}

/// The columns of `tasks` this projection writes (all but the generated `search`).
const TASK_COLUMNS: &str = "id, version, task_type, status, priority, required_capabilities, \
    target_agent_id, agent_id, input, output, error, progress, progress_message, attempt, \
    max_retries, failures, schedule_at, queue_timeout_secs, execution_timeout_secs, \
    idempotency_key, parent_task_id, depends_on, submitted_by, correlation_id, cancel_reason, \
    created_at, updated_at, queued_at, assigned_at, lease_expires_at, started_at, finished_at";

const AGENT_COLUMNS: &str = "id, version, name, agent_type, status, capabilities, config, \
    max_concurrent_tasks, health_reason, last_health_change_at, created_at, updated_at, retired_at";

/// A `tasks` row; field names are its column names.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct TaskRow {
    id: Uuid,
    version: i64,
    task_type: String,
    status: String,
    priority: i16,
    required_capabilities: Vec<String>,
    target_agent_id: Option<Uuid>,
    agent_id: Option<Uuid>,
    input: Value,
    output: Option<Value>,
    error: Option<String>,
    progress: Option<i16>,
    progress_message: Option<String>,
    attempt: i32,
    max_retries: i32,
    /// A JSON array.
    failures: Value,
    schedule_at: Option<DateTime<Utc>>,
    queue_timeout_secs: Option<i64>,
    execution_timeout_secs: Option<i64>,
    idempotency_key: Option<String>,
    parent_task_id: Option<Uuid>,
    depends_on: Vec<Uuid>,
    submitted_by: String,
    correlation_id: String,
    cancel_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    queued_at: Option<DateTime<Utc>>,
    assigned_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

/// An `agents` row; field names are its column names.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct AgentRow {
    id: Uuid,
    version: i64,
    name: String,
    agent_type: String,
    status: String,
    capabilities: Vec<String>,
    config: Value,
    max_concurrent_tasks: i32,
    health_reason: Option<String>,
    last_health_change_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
}

/// Postgres keeps microseconds: fold with what will be stored, so that a
/// row folded in memory equals the row read back.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// A u32 from an event as an `int` column (the domain bounds these far lower).
fn int(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A u64 from an event as a `bigint` column.
fn bigint(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A read-model row type: its table, the columns this projection writes,
/// its key and its version.
trait Row: Serialize + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin {
    const TABLE: &'static str;
    const COLUMNS: &'static str;
    fn id(&self) -> Uuid;
    fn version(&self) -> i64;
}

impl Row for TaskRow {
    const TABLE: &'static str = "tasks";
    const COLUMNS: &'static str = TASK_COLUMNS;
    fn id(&self) -> Uuid {
        self.id
    }
    fn version(&self) -> i64 {
        self.version
    }
}

impl Row for AgentRow {
    const TABLE: &'static str = "agents";
    const COLUMNS: &'static str = AGENT_COLUMNS;
    fn id(&self) -> Uuid {
        self.id
    }
    fn version(&self) -> i64 {
        self.version
    }
}

/// The rows of one table a batch touches, which of them were stored before
/// it, and which of them it changed.
struct Rows<R> {
    rows: HashMap<Uuid, R>,
    stored: HashSet<Uuid>,
    changed: BTreeSet<Uuid>,
}

impl<R: Row> Rows<R> {
    /// Reads the rows with these ids in one statement.
    async fn load(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Self, ApplyError> {
        let rows: Vec<R> = if ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(&format!(
                "SELECT {} FROM {} WHERE id = ANY($1)",
                R::COLUMNS,
                R::TABLE
            ))
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?
        };
        Ok(Self {
            stored: rows.iter().map(Row::id).collect(),
            rows: rows.into_iter().map(|r| (r.id(), r)).collect(),
            changed: BTreeSet::new(),
        })
    }

    fn version(&self, id: &Uuid) -> Option<i64> {
        self.rows.get(id).map(Row::version)
    }

    fn changed_rows(&self) -> Vec<&R> {
        self.changed
            .iter()
            .filter_map(|id| self.rows.get(id))
            .collect()
    }

    /// The changed rows, new ones first, and how many are new.
    fn changed_new_first(&self) -> (Vec<&R>, usize) {
        let (mut rows, stored): (Vec<&R>, Vec<&R>) = self
            .changed_rows()
            .into_iter()
            .partition(|r| !self.stored.contains(&r.id()));
        let new = rows.len();
        rows.extend(stored);
        (rows, new)
    }

    /// Writes the changed rows in one statement, as one JSON document.
    async fn write(&self, conn: &mut PgConnection) -> Result<(), ApplyError> {
        let changed = self.changed_rows();
        if !changed.is_empty() {
            sqlx::query(&upsert(R::TABLE, R::COLUMNS))
                .bind(Json(&changed))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// The rows one batch touches, what it changed, and the history it adds.
struct Batch<'a> {
    tasks: Rows<TaskRow>,
    agents: Rows<AgentRow>,
    history: Vec<HistoryRow<'a>>,
}

/// The aggregate id of an event as a UUID.
fn aggregate_uuid(event: &ProjectedEvent) -> Result<Uuid, ApplyError> {
    Uuid::parse_str(&event.envelope.aggregate_id).map_err(|_| {
        ApplyError::Rejected(format!(
            "aggregate id {:?} is not a UUID",
            event.envelope.aggregate_id
        ))
    })
}

impl<'a> Batch<'a> {
    /// Reads every row the events touch, in one statement per table.
    async fn load(conn: &mut PgConnection, events: &[ProjectedEvent]) -> Result<Self, ApplyError> {
        let (mut task_ids, mut agent_ids) = (Vec::new(), Vec::new());
        for e in events {
            let Ok(id) = Uuid::parse_str(&e.envelope.aggregate_id) else {
                continue; // refused by `fold`
            };
            match e.event {
                DomainEvent::Task(_) => task_ids.push(id),
                DomainEvent::Agent(_) => agent_ids.push(id),
            }
        }
        Ok(Self {
            tasks: Rows::load(conn, &task_ids).await?,
            agents: Rows::load(conn, &agent_ids).await?,
            history: Vec::new(),
        })
    }

    /// Folds one event into its row: applied if it is the row's next event
    /// (or creates a row that does not exist), skipped if the row has it
    /// already, refused otherwise.
    fn fold(&mut self, event: &'a ProjectedEvent) -> Result<Applied, ApplyError> {
        let id = aggregate_uuid(event)?;
        let seq = event.envelope.sequence;
        let (table, creates) = match &event.event {
            DomainEvent::Agent(e) => ("agents", matches!(e, AgentEvent::AgentCreated(_))),
            DomainEvent::Task(e) => ("tasks", matches!(e, TaskEvent::TaskSubmitted(_))),
        };
        if creates && seq != 1 {
            return Err(ApplyError::Rejected(format!(
                "{table} {id}: creation event at sequence {seq}"
            )));
        }
        let version = match &event.event {
            DomainEvent::Agent(_) => self.agents.version(&id),
            DomainEvent::Task(_) => self.tasks.version(&id),
        };
        match version {
            Some(v) if seq <= v => return Ok(Applied::Skipped),
            Some(v) if seq != v + 1 => {
                return Err(ApplyError::Rejected(format!(
                    "{table} {id}: expected sequence {} next, got {seq}",
                    v + 1
                )))
            }
            None if !creates => {
                return Err(ApplyError::Rejected(format!(
                    "{table} {id}: no row before sequence {seq} ({})",
                    event.envelope.event_type
                )))
            }
            _ => {}
        }
        let at = micros(event.envelope.occurred_at);
        match &event.event {
            DomainEvent::Agent(e) => {
                match (self.agents.rows.get_mut(&id), e) {
                    (None, AgentEvent::AgentCreated(c)) => {
                        self.agents.rows.insert(id, created_agent(id, at, c));
                    }
                    (Some(row), e) => fold_agent(row, seq, at, e),
                    (None, _) => {} // refused above
                }
                self.agents.changed.insert(id);
            }
            DomainEvent::Task(e) => {
                match (self.tasks.rows.get_mut(&id), e) {
                    (None, TaskEvent::TaskSubmitted(s)) => {
                        self.tasks.rows.insert(id, submitted_task(id, at, event, s));
                    }
                    (Some(row), e) => fold_task(row, seq, at, e),
                    (None, _) => {} // refused above
                }
                self.tasks.changed.insert(id);
                self.history.push(history_row(id, at, event, e));
            }
        }
        Ok(Applied::Applied)
    }

    /// Writes the changed agents in one statement, and the changed tasks and
    /// the new history rows together in another.
    async fn write(self, conn: &mut PgConnection) -> Result<(), ApplyError> {
        self.agents.write(conn).await?;
        let (tasks, new) = self.tasks.changed_new_first();
        let (has_new, has_stored) = (new > 0, new < tasks.len());
        let h = &self.history;
        match (tasks.is_empty(), h.is_empty()) {
            (true, true) => {}
            (false, true) => {
                let statement = task_statement(has_new, has_stored, false);
                bind_tasks(sqlx::query(statement), &tasks, new)
                    .execute(&mut *conn)
                    .await?;
            }
            (true, false) => {
                bind_history(sqlx::query(&HISTORY_INSERT), h)
                    .execute(&mut *conn)
                    .await?;
            }
            // The usual batch: both in one statement, one round trip less
            // on the way from an event to its read.
            (false, false) => {
                let statement = task_statement(has_new, has_stored, true);
                bind_history(bind_tasks(sqlx::query(statement), &tasks, new), h)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// A Postgres array literal of `items` (each quoted), for an array column
/// passed through `unnest` as text: `unnest` cannot take an array of arrays
/// of different lengths.
fn array_literal<T: std::fmt::Display>(items: &[T]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.to_string().chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// One column of `rows`, as an array parameter for `unnest`.
fn column<'a, R, T>(rows: &'a [R], value: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}

/// The type of each task column's array parameter ($1…$32, in `TASK_COLUMNS`
/// order; the two array columns arrive as array literals, see [`task_value`]).
const TASK_TYPES: [&str; 32] = [
    "uuid",
    "int8",
    "text",
    "text",
    "int2",
    "text",
    "uuid",
    "uuid",
    "jsonb",
    "jsonb",
    "text",
    "int2",
    "text",
    "int4",
    "int4",
    "jsonb",
    "timestamptz",
    "int8",
    "int8",
    "text",
    "uuid",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "timestamptz",
];

/// `unnest($first::type[]) AS column, …` over typed column arrays. As
/// set-returning functions in a select list they run in lockstep and stream
/// their rows; `FROM unnest(…)` of several arrays would first materialise
/// every row (a tenth of a rebuild's database time).
fn unnest_list<'a>(first: usize, columns: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    columns
        .into_iter()
        .enumerate()
        .map(|(i, (column, ty))| format!("unnest(${}::{ty}[]) AS {column}", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The task rows of $1…$32 as `r`, numbered `n` from 1.
static TASK_UNNEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let list = unnest_list(1, TASK_COLUMNS.split(',').map(str::trim).zip(TASK_TYPES));
    format!("(SELECT {list}, generate_series(1, cardinality($1::uuid[])) AS n) r")
});

/// The value of a task column from the `unnest` row `r`.
fn task_value(column: &str) -> String {
    match column {
        "required_capabilities" => format!("r.{column}::text[]"),
        "depends_on" => format!("r.{column}::uuid[]"),
        _ => format!("r.{column}"),
    }
}

/// The statement that writes a batch's task rows — rows 1…$33 new and
/// inserted, the rest stored before and updated — and, with `history`, its
/// history rows; `new` and `stored` say which of the two kinds there are.
///
/// The batch holds the projection's lock and has read every row it touches,
/// so it knows which rows are new: none needs `ON CONFLICT`'s speculative
/// insertion (an index probe before each insert; in a rebuild, the largest
/// part of the insert cost after the generated search column). A row taken
/// for new that exists fails the batch, which then re-runs event by event.
/// A kind the batch lacks is left out of the statement rather than filtered
/// to nothing.
fn task_statement(new: bool, stored: bool, history: bool) -> &'static str {
    static STATEMENTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (0..8)
            .map(|i| build_task_statement(i & 1 != 0, i & 2 != 0, i & 4 != 0))
            .collect()
    });
    &STATEMENTS[usize::from(new) | usize::from(stored) << 1 | usize::from(history) << 2]
}

fn build_task_statement(new: bool, stored: bool, history: bool) -> String {
    let columns: Vec<&str> = TASK_COLUMNS.split(',').map(str::trim).collect();
    let unnest = &*TASK_UNNEST;
    let mut ctes = Vec::new();
    if new {
        let select = columns
            .iter()
            .map(|c| task_value(c))
            .collect::<Vec<_>>()
            .join(", ");
        ctes.push(format!(
            "new_tasks AS (INSERT INTO tasks ({TASK_COLUMNS}) SELECT {select} FROM {unnest} \
                 WHERE r.n <= $33)"
        ));
    }
    if stored || ctes.is_empty() {
        let set = columns
            .iter()
            .filter(|c| **c != "id")
            .map(|c| format!("{c} = {}", task_value(c)))
            .collect::<Vec<_>>()
            .join(", ");
        // `t.id = ANY($1)` bounds the rows of `tasks` the join reads by the
        // batch whatever plan it gets. Without it, the generic plan Postgres
        // keeps after five runs (made while the table was small) hashed the
        // whole primary-key index on every batch: up to 406 ms a batch over
        // ~100,000 tasks (auto_explain, `loadgen --parts commands,visibility`).
        ctes.push(format!(
            "stored_tasks AS (UPDATE tasks t SET {set} FROM {unnest} \
                 WHERE r.n > $33 AND t.id = r.id AND t.id = ANY($1::uuid[]))"
        ));
    }
    // Data-modifying CTEs run to completion whether or not they are referred to.
    let main = if history {
        history_insert(34)
    } else {
        "SELECT 1".to_string()
    };
    format!("WITH {} {main}", ctes.join(", "))
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds task rows to [`task_statement`]'s parameters: $1…$32 column by column
/// as typed arrays (Postgres reads these far cheaper than a JSON document of
/// rows: parsing that document was the largest part of a rebuild's database
/// time), and $33 the number of new rows, which come first.
fn bind_tasks<'q>(query: PgQuery<'q>, rows: &[&'q TaskRow], new: usize) -> PgQuery<'q> {
    query
        .bind(column(rows, |r| r.id))
        .bind(column(rows, |r| r.version))
        .bind(column(rows, |r| r.task_type.as_str()))
        .bind(column(rows, |r| r.status.as_str()))
        .bind(column(rows, |r| r.priority))
        .bind(column(rows, |r| array_literal(&r.required_capabilities)))
        .bind(column(rows, |r| r.target_agent_id))
        .bind(column(rows, |r| r.agent_id))
        .bind(column(rows, |r| Json(&r.input)))
        .bind(column(rows, |r| r.output.as_ref().map(Json)))
        .bind(column(rows, |r| r.error.as_deref()))
        .bind(column(rows, |r| r.progress))
        .bind(column(rows, |r| r.progress_message.as_deref()))
        .bind(column(rows, |r| r.attempt))
        .bind(column(rows, |r| r.max_retries))
        .bind(column(rows, |r| Json(&r.failures)))
        .bind(column(rows, |r| r.schedule_at))
        .bind(column(rows, |r| r.queue_timeout_secs))
        .bind(column(rows, |r| r.execution_timeout_secs))
        .bind(column(rows, |r| r.idempotency_key.as_deref()))
        .bind(column(rows, |r| r.parent_task_id))
        .bind(column(rows, |r| array_literal(&r.depends_on)))
        .bind(column(rows, |r| r.submitted_by.as_str()))
        .bind(column(rows, |r| r.correlation_id.as_str()))
        .bind(column(rows, |r| r.cancel_reason.as_deref()))
        .bind(column(rows, |r| r.created_at))
        .bind(column(rows, |r| r.updated_at))
        .bind(column(rows, |r| r.queued_at))
        .bind(column(rows, |r| r.assigned_at))
        .bind(column(rows, |r| r.lease_expires_at))
        .bind(column(rows, |r| r.started_at))
        .bind(column(rows, |r| r.finished_at))
        .bind(i64::try_from(new).unwrap_or(i64::MAX))
}

/// Binds history rows to [`history_insert`]'s twelve parameters.
fn bind_history<'q>(query: PgQuery<'q>, h: &'q [HistoryRow<'q>]) -> PgQuery<'q> {
    query
        .bind(column(h, |r| r.task_id))
        .bind(column(h, |r| r.sequence))
        .bind(column(h, |r| bigint(r.stream_sequence)))
        .bind(column(h, |r| r.event_id))
        .bind(column(h, |r| r.event_type))
        .bind(column(h, |r| r.occurred_at))
        .bind(column(h, |r| r.actor))
        .bind(column(h, |r| r.correlation_id))
        .bind(column(h, |r| r.causation_id))
        .bind(column(h, |r| r.request_id))
        .bind(column(h, |r| r.agent_id))
        .bind(column(h, |r| Json(&r.payload)))
}

/// The history insert over typed column arrays, its parameters numbered from
/// `first`. Column by column as typed arrays, as the tasks.
fn history_insert(first: usize) -> String {
    const COLUMNS: [(&str, &str); 12] = [
        ("task_id", "uuid"),
        ("sequence", "int8"),
        ("stream_sequence", "int8"),
        ("event_id", "uuid"),
        ("event_type", "text"),
        ("occurred_at", "timestamptz"),
        ("actor", "text"),
        ("correlation_id", "text"),
        ("causation_id", "text"),
        ("request_id", "text"),
        ("agent_id", "uuid"),
        ("payload", "jsonb"),
    ];
    let names = COLUMNS.map(|(c, _)| c).join(", ");
    format!(
        "INSERT INTO task_events ({names}) SELECT {}",
        unnest_list(first, COLUMNS)
    )
}

static HISTORY_INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| history_insert(1));

/// `col = EXCLUDED.col` for every column but the key.
fn update_set(columns: &str) -> String {
    columns
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "id")
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts or replaces rows given as a JSON array ($1) of objects keyed by column.
fn upsert(table: &str, columns: &str) -> String {
    let set = update_set(columns);
    format!(
        "INSERT INTO {table} ({columns}) SELECT {columns} \
         FROM jsonb_populate_recordset(NULL::{table}, $1) \
         ON CONFLICT (id) DO UPDATE SET {set}"
    )
}

fn created_agent(id: Uuid, at: DateTime<Utc>, e: &AgentCreated) -> AgentRow {
    AgentRow {
        id,
        version: 1,
        name: e.name.clone(),
        agent_type: e.agent_type.clone(),
        status: "inactive".into(),
        capabilities: e.capabilities.clone(),
        config: e.config.clone(),
        max_concurrent_tasks: int(e.max_concurrent_tasks),
        health_reason: None,
        last_health_change_at: None,
        created_at: at,
        updated_at: at,
        retired_at: None,
    }
}

fn fold_agent(row: &mut AgentRow, seq: i64, at: DateTime<Utc>, event: &AgentEvent) {
    row.version = seq;
    row.updated_at = at;
    let (status, health_change, reason) = match event {
        AgentEvent::AgentCreated(_) => return, // only ever at sequence 1, skipped above
        AgentEvent::AgentUpdated(e) => {
            if let Some(name) = &e.name {
                row.name = name.clone();
            }
            if let Some(c) = &e.capabilities {
                row.capabilities = c.clone();
            }
            if let Some(c) = &e.config {
                row.config = c.clone();
            }
            if let Some(m) = e.max_concurrent_tasks {
                row.max_concurrent_tasks = int(m);
            }
            return;
        }
        AgentEvent::AgentActivated(_) => ("active", false, None),
        AgentEvent::AgentDeactivated(_) => ("inactive", false, None),
        AgentEvent::AgentMarkedUnhealthy(e) => ("unhealthy", true, Some(e.reason.clone())),
        AgentEvent::AgentRecovered(_) => ("active", true, None),
        AgentEvent::AgentRetired(_) => ("retired", false, None),
    };
    row.status = status.into();
    if health_change {
        row.health_reason = reason;
        row.last_health_change_at = Some(at);
    }
    if status == "retired" {
        row.retired_at = Some(at);
    }
}

fn submitted_task(
    id: Uuid,
    at: DateTime<Utc>,
    event: &ProjectedEvent,
    e: &TaskSubmitted,
) -> TaskRow {
    let meta = &event.envelope.metadata;
    TaskRow {
        id,
        version: 1,
        task_type: e.task_type.clone(),
        status: "submitted".into(),
        priority: i16::from(e.priority),
        required_capabilities: e.required_capabilities.clone(),
        target_agent_id: e.target_agent_id,
        agent_id: None,
        input: e.input.clone(),
        output: None,
        error: None,
        progress: None,
        progress_message: None,
        attempt: 1,
        max_retries: int(e.max_retries),
        failures: Value::Array(Vec::new()),
        schedule_at: e.schedule_at.map(micros),
        queue_timeout_secs: e.queue_timeout_secs.map(bigint),
        execution_timeout_secs: e.execution_timeout_secs.map(bigint),
        idempotency_key: e.idempotency_key.clone(),
        parent_task_id: e.parent_task_id,
        depends_on: e.depends_on.clone(),
        submitted_by: meta.actor.clone(),
        correlation_id: meta.correlation_id.clone(),
        cancel_reason: None,
        created_at: at,
        updated_at: at,
        queued_at: None,
        assigned_at: None,
        lease_expires_at: None,
        started_at: None,
        finished_at: None,
    }
}

/// Appends to the `failures` array (a row whose value is not an array, which
/// no write of ours makes, starts a new one).
fn push_failure(failures: &mut Value, failure: Value) {
    match failures {
        Value::Array(list) => list.push(failure),
        other => *other = Value::Array(vec![failure]),
    }
}

fn fold_task(row: &mut TaskRow, seq: i64, at: DateTime<Utc>, event: &TaskEvent) {
    row.version = seq;
    row.updated_at = at;
    let status = match event {
        TaskEvent::TaskSubmitted(_) => return, // only ever at sequence 1, skipped above
        TaskEvent::TaskScheduled(e) => {
            row.schedule_at = Some(micros(e.schedule_at));
            "scheduled"
        }
        TaskEvent::TaskQueued(e) => {
            row.queued_at = Some(at);
            row.attempt = int(e.attempt);
            row.agent_id = None;
            row.lease_expires_at = None;
            "queued"
        }
        TaskEvent::TaskAssigned(e) => {
            row.assigned_at = Some(at);
            row.agent_id = Some(e.agent_id);
            row.attempt = int(e.attempt);
            row.lease_expires_at = Some(micros(e.lease_expires_at));
            "assigned"
        }
        TaskEvent::TaskStarted(_) => {
            row.started_at = Some(at);
            row.progress = Some(0);
            "running"
        }
        TaskEvent::TaskProgressReported(e) => {
            row.progress = Some(i16::from(e.percent));
            row.progress_message = e.message.clone();
            return;
        }
        TaskEvent::TaskSucceeded(e) => {
            row.finished_at = Some(at);
            row.output = Some(e.output.clone());
            row.progress = Some(100);
            row.error = None;
            "succeeded"
        }
        TaskEvent::TaskFailed(e) => {
            row.finished_at = Some(at);
            row.error = Some(e.error.clone());
            push_failure(
                &mut row.failures,
                json!({"attempt": e.attempt,
                "agent_id": e.agent_id, "error": e.error, "retryable": e.retryable, "at": at}),
            );
            "failed"
        }
        TaskEvent::TaskRetryScheduled(e) => {
            row.attempt = int(e.attempt);
            row.schedule_at = Some(micros(e.not_before));
            row.finished_at = None;
            row.agent_id = None;
            "scheduled"
        }
        TaskEvent::TaskCancelled(e) => {
            row.finished_at = Some(at);
            row.cancel_reason = e.reason.clone();
            "cancelled"
        }
        TaskEvent::TaskTimedOut(e) => {
            let phase = serde_json::to_value(e.phase).unwrap_or_default();
            let error = format!(
                "timed out ({} timeout)",
                phase.as_str().unwrap_or("unknown")
            );
            row.finished_at = Some(at);
            push_failure(
                &mut row.failures,
                json!({"attempt": e.attempt,
                "agent_id": e.agent_id, "error": error, "retryable": e.phase != TimeoutPhase::Queue,
                "at": at}),
            );
            row.error = Some(error);
            "timed_out"
        }
    };
    row.status = status.into();
}

fn event_agent(e: &TaskEvent) -> Option<Uuid> {
    match e {
        TaskEvent::TaskSubmitted(s) => s.target_agent_id,
        TaskEvent::TaskAssigned(a) => Some(a.agent_id),
        TaskEvent::TaskStarted(s) => Some(s.agent_id),
        TaskEvent::TaskProgressReported(p) => Some(p.agent_id),
        TaskEvent::TaskSucceeded(s) => Some(s.agent_id),
        TaskEvent::TaskFailed(f) => f.agent_id,
        TaskEvent::TaskCancelled(c) => c.agent_id,
        TaskEvent::TaskTimedOut(t) => t.agent_id,
        TaskEvent::TaskScheduled(_)
        | TaskEvent::TaskQueued(_)
        | TaskEvent::TaskRetryScheduled(_) => None,
    }
}

/// A `task_events` row; field names are its column names.
struct HistoryRow<'a> {
    task_id: Uuid,
    sequence: i64,
    stream_sequence: u64,
    event_id: Uuid,
    event_type: &'a str,
    occurred_at: DateTime<Utc>,
    actor: &'a str,
    correlation_id: &'a str,
    causation_id: &'a str,
    request_id: &'a str,
    agent_id: Option<Uuid>,
    payload: Payload<'a>,
}

/// A task event's fields without the variant name around them, as
/// `task_events.payload` keeps them. Serialised straight from the event:
/// no intermediate JSON tree (it was a tenth of a rebuild's own CPU).
struct Payload<'a>(&'a TaskEvent);

impl Serialize for Payload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TaskEvent::TaskSubmitted(e) => e.serialize(s),
            TaskEvent::TaskScheduled(e) => e.serialize(s),
            TaskEvent::TaskQueued(e) => e.serialize(s),
            TaskEvent::TaskAssigned(e) => e.serialize(s),
            TaskEvent::TaskStarted(e) => e.serialize(s),
            TaskEvent::TaskProgressReported(e) => e.serialize(s),
            TaskEvent::TaskSucceeded(e) => e.serialize(s),
            TaskEvent::TaskFailed(e) => e.serialize(s),
            TaskEvent::TaskRetryScheduled(e) => e.serialize(s),
            TaskEvent::TaskCancelled(e) => e.serialize(s),
            TaskEvent::TaskTimedOut(e) => e.serialize(s),
        }
    }
}

/// The `task_events` row of an event.
fn history_row<'a>(
    id: Uuid,
    at: DateTime<Utc>,
    event: &'a ProjectedEvent,
    task_event: &'a TaskEvent,
) -> HistoryRow<'a> {
    let e = &event.envelope;
    HistoryRow {
        task_id: id,
        sequence: e.sequence,
        stream_sequence: event.stream_sequence,
        event_id: e.event_id,
        event_type: &e.event_type,
        occurred_at: at,
        actor: &e.metadata.actor,
        correlation_id: &e.metadata.correlation_id,
        causation_id: &e.metadata.causation_id,
        request_id: &e.metadata.request_id,
        agent_id: event_agent(task_event),
        payload: Payload(task_event),
    }
}
