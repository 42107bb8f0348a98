use clap::Parser;
use command_service::{serve, Config};
use service_kit::telemetry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
