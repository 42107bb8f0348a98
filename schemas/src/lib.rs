//! Wire types of SutazAI: what is stored in the event store, what goes over NATS
//! and what goes over HTTP. This crate depends on no other crate of the
//! workspace, so that an outside subscriber or agent can use it alone.
//!
//! Layout:
//! - [`agent`]: the NATS protocol with agents (assignments, cancellations, heartbeats).
//! - [`events`]: the event payloads of the `agent` and `task` aggregates, with
//!   their explicit type names and versions (the contract; defined once here).
//! - [`decode`]: a published message → its envelope and typed event.
//! - [`envelope`]: the envelope every event travels in on JetStream.
//! - [`subjects`]: NATS subject names and header names, in one place.
//! - [`upcast`]: how stored events of older versions are brought up to date.
//! - [`http`]: request and response bodies of the HTTP APIs (utoipa schemas).
//! - [`problem`]: the RFC 7807 problem+json error body.
//! - [`query`]: response bodies of the query API.
//! - [`state`]: an aggregate's state folded from its events (audits).
//! - [`status`]: lifecycle states of agents and tasks.
#![forbid(unsafe_code)]

pub mod agent;
pub mod decode;
pub mod envelope;
pub mod events;
pub mod http;
pub mod problem;
pub mod query;
pub mod state;
pub mod status;
pub mod subjects;
pub mod upcast;

pub use envelope::{EventEnvelope, EventMetadata};
pub use events::{AgentEvent, TaskEvent};
pub use problem::Problem;
