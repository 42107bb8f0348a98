//! The `Task` aggregate: submitted → (scheduled) → queued → assigned → running
//! → succeeded | failed | cancelled | timed_out, with retries from failed or
//! timed_out back through scheduled (backoff) to queued.

mod aggregate;
mod commands;
#[cfg(test)]
mod tests;

pub use aggregate::Task;
pub use commands::{SubmitTask, TaskCommand};
