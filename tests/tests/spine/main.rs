//! End-to-end tests of the spine: HTTP commands → Postgres event store →
//! outbox → relay → NATS JetStream, against real Postgres and a private
//! nats-server per test.

mod bad_input;
mod concurrency;
mod flow;
mod relay;
mod support;
