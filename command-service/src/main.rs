use clap::Parser;
use command_service::{serve, Config};
use service_kit::telemetry;

/// mimalloc (without transparent huge pages, which took a service's RSS
/// from 30 to 50 MiB) instead of the C library's allocator: allocating and
/// freeing were about a sixth of a service's CPU under load in `perf`, most
/// of it glibc's chunk bookkeeping. (The query service uses it too, for
/// memory: see `query-service/src/main.rs`.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    service_kit::allocator::run_main("command-service", async_main)
}

async fn async_main() -> std::process::ExitCode {
    let config = Config::parse();
    telemetry::init(&config.log_format);
    match serve(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "command service failed");
            eprintln!("command-service: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
