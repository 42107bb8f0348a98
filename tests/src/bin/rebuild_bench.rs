//! Rebuild throughput benchmark: fills a private stream with N events (valid
//! task events, two per task), then rebuilds the Postgres read models from it
//! and prints events per second. A benchmark, not a test. (`loadgen` runs the
//! same measurement as one of its parts.)
//!
//! `cargo run --release -p tests --bin rebuild_bench -- [events] [batch]`
//! (defaults 500000 and `projectors::rebuild::DEFAULT_BATCH`, as `projectors rebuild` uses).

/// The allocator of the service binaries (mimalloc; see `projectors/src/main.rs`):
/// the rebuild runs here in process, as it does in `projectors rebuild`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(500_000);
    let batch: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(projectors::rebuild::DEFAULT_BATCH);
    let (publish_rate, report) = tests::bench::rebuild_read_models(events, batch).await;
    println!(
        "rebuild of read_models from the stream: {} events in {:.1} s = {:.0} events/s \
         (batch {batch}; published at {publish_rate:.0} events/s)",
        report.events, report.seconds, report.events_per_second
    );
}
