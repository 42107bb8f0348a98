use clap::Parser;
use query_service::{serve, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
