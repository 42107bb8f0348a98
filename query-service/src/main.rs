use clap::Parser;
use query_service::{serve, Config};

/// mimalloc, as in the other services (see `projectors/src/main.rs`). Here
/// for memory more than speed: the Qdrant Edge calls run on the blocking
/// pool, and each reopen of a shard (see `projectors::search::edge`) frees
/// one copy of its in-memory indexes and builds another on whichever thread
/// runs it; glibc's per-thread arenas kept the freed ones (anonymous memory
/// 156 MiB after one `loadgen --parts commands`, against 49 MiB with a
/// single arena).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    service_kit::allocator::run_main("query-service", async_main)
}

async fn async_main() -> std::process::ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(&config.log_format);
    match serve(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "query service failed");
            eprintln!("query-service: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
