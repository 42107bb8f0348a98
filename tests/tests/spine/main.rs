//! End-to-end tests of the spine: HTTP commands → Postgres event store →
//! outbox → relay → NATS JetStream, against real Postgres and a private
//! nats-server per test.

mod bad_input;
mod concurrency;
mod flow;
mod group_commit;
mod relay;
mod support;
