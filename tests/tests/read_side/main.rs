//! End-to-end tests of the read side: commands → stream → projector → read
//! models → query API, against real Postgres and a private nats-server.

mod audit;
mod crash;
mod dead_letters;
mod deferred_flush;
mod graph_batch;
mod linger;
mod live;
mod parked_reads;
mod queries;
mod rebuild;
mod row_writes;
mod support;
