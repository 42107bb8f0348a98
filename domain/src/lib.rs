//! The SutazAI domain: aggregates, commands, domain errors and validation.
//! Pure: no I/O. Anything a decision needs from outside (the current time, a
//! dependency's state) is looked up by the caller and put in the command.
//! Events are the wire contract and live in `schemas`.
//!
//! Layout:
//! - [`agent`]: the `Agent` aggregate and its commands.
//! - [`task`]: the `Task` aggregate and its commands.
//! - [`error`]: [`DomainError`], one kind per way a command is refused.
//! - [`validate`]: input rules shared by both aggregates.
#![forbid(unsafe_code)]

pub mod agent;
pub mod error;
pub mod task;
pub mod validate;

pub use agent::{Agent, AgentCommand};
pub use error::DomainError;
pub use task::{Task, TaskCommand};
