//! Running commands against the Postgres event store (postgres-es).
//!
//! We drive cqrs-es's `PersistedEventStore` directly rather than through
//! `CqrsFramework` because a command's answer needs the aggregate's new
//! version, and because a conditional command (`If-Match`) must be refused
//! when the loaded version is not the expected one. The primary key
//! (aggregate_type, aggregate_id, sequence) is the optimistic lock: two
//! commands that decided on the same version cannot both commit.

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, EventStore};
use domain::{Agent, DomainError, Task};
use sqlx::PgPool;

use crate::commit::{GroupCommitRepository, GroupCommitter};
use crate::error::ApiError;
use crate::relay::OutboxSignal;

/// The event store of aggregate `A`, and the signal that wakes the relay
/// after a commit.
pub struct Store<A: Aggregate> {
    events: PersistedEventStore<GroupCommitRepository, A>,
    outbox: Arc<OutboxSignal>,
}

/// The event stores of both aggregates.
pub struct EventStores {
    pub agents: Store<Agent>,
    pub tasks: Store<Task>,
}

/// What a committed command left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed<E> {
    /// The aggregate's version (sequence of its last event) after the command.
    pub version: i64,
    /// The events it committed, in order, ending at `version`.
    pub events: Vec<E>,
}

impl EventStores {
    /// Snapshots every `snapshot_every` events keep loading an aggregate cheap.
    /// Both stores commit through one group committer (see [`crate::commit`]);
    /// must be called inside a Tokio runtime.
    pub fn new(pool: PgPool, snapshot_every: usize, outbox: Arc<OutboxSignal>) -> Self {
        let committer = GroupCommitter::start(pool);
        let repo = || committer.repository();
        Self {
            agents: Store {
                events: PersistedEventStore::new_snapshot_store(repo(), snapshot_every.max(1)),
                outbox: outbox.clone(),
            },
            tasks: Store {
                events: PersistedEventStore::new_snapshot_store(repo(), snapshot_every.max(1)),
                outbox,
            },
        }
    }
}

/// Loads the aggregate, checks the expected version, decides and commits.
pub async fn execute<A>(
    store: &Store<A>,
    aggregate_id: &str,
    command: A::Command,
    metadata: HashMap<String, String>,
    expected_version: Option<i64>,
) -> Result<Committed<A::Event>, ApiError>
where
    A: Aggregate<Error = DomainError, Services = ()> + Clone,
{
    let context = store.events.load_aggregate(aggregate_id).await?;
    let current = context.current_sequence as i64;
    if let Some(expected) = expected_version {
        if expected != current {
            return Err(ApiError::Conflict {
                code: "version_conflict",
                detail: format!("expected version {expected}, the aggregate is at {current}"),
            });
        }
    }
    decide_and_commit(store, context, command, metadata).await
}

/// Runs a command that creates an aggregate under an id nobody can have used
/// (a fresh random UUID), without reading the store first: two round trips
/// fewer. Were the id taken after all, the commit's primary key refuses it
/// (`version_conflict`), so nothing is overwritten.
pub async fn execute_new<A>(
    store: &Store<A>,
    aggregate_id: &str,
    command: A::Command,
    metadata: HashMap<String, String>,
) -> Result<Committed<A::Event>, ApiError>
where
    A: Aggregate<Error = DomainError, Services = ()> + Clone,
{
    let context = EventStoreAggregateContext {
        aggregate_id: aggregate_id.to_string(),
        aggregate: A::default(),
        current_sequence: 0,
        current_snapshot: None,
    };
    decide_and_commit(store, context, command, metadata).await
}

async fn decide_and_commit<A>(
    store: &Store<A>,
    context: EventStoreAggregateContext<A>,
    command: A::Command,
    metadata: HashMap<String, String>,
) -> Result<Committed<A::Event>, ApiError>
where
    A: Aggregate<Error = DomainError, Services = ()> + Clone,
{
    let current = context.current_sequence as i64;
    // Decide on a copy: the store applies the new events to the context's
    // aggregate itself when it takes a snapshot, and must not apply them twice.
    let mut working = context.aggregate.clone();
    let sink = EventSink::default();
    working
        .handle(command, &(), &sink)
        .await
        .map_err(AggregateError::UserError)?;
    let events = sink.collect().await;
    let committed = store.events.commit(events, context, metadata).await?;
    if !committed.is_empty() {
        store.outbox.committed();
    }
    let version = committed.last().map_or(current, |e| e.sequence as i64);
    Ok(Committed {
        version,
        events: committed.into_iter().map(|e| e.payload).collect(),
    })
}

/// Loads an aggregate and its version without changing it.
pub async fn load<A>(store: &Store<A>, aggregate_id: &str) -> Result<(A, i64), ApiError>
where
    A: Aggregate<Error = DomainError, Services = ()>,
{
    let context = store.events.load_aggregate(aggregate_id).await?;
    let version = context.current_sequence as i64;
    Ok((context.aggregate, version))
}
