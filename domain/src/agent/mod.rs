//! The `Agent` aggregate: created → active ⇄ inactive, unhealthy when its
//! heartbeats stop, retired for good.

mod aggregate;
mod commands;

pub use aggregate::Agent;
pub use commands::{AgentCommand, CreateAgent, UpdateAgent};
