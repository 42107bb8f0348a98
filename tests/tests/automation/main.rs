//! End-to-end task automation: the coordinator dispatches to real agents
//! (the SDK, in process), enforces capabilities, capacity, priority,
//! schedules, dependencies, liveness, timeouts, retries and cancellation.

mod agents;
mod failover;
mod support;
mod view_batch;
