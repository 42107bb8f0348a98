use std::process::ExitCode;

use clap::Parser;
use projectors::config::Command;
use projectors::{connect_pool, dead_letters, select, Config, Projectors};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    service_kit::telemetry::init(&config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("projectors: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    match config
        .command
        .clone()
        .unwrap_or(Command::Run { only: vec![] })
    {
        Command::Run { only } => {
            let projections = select(&only)?;
            let listener = tokio::net::TcpListener::bind(config.bind).await?;
            let running = Projectors::start(&config, projections, listener).await?;
            service_kit::shutdown_signal().await;
            tracing::info!("stopping after the batch in flight");
            running.shutdown().await;
        }
        Command::DeadLetters { all, projection } => {
            let pool = connect_pool(&config).await?;
            for dl in dead_letters::list(&pool, projection.as_deref(), all).await? {
                println!("{}", serde_json::to_string(&dl)?);
            }
        }
        Command::Redrive {
            projection,
            aggregate_id,
        } => {
            let pool = connect_pool(&config).await?;
            let chosen = select(std::slice::from_ref(&projection))?;
            for p in chosen {
                let report = dead_letters::redrive(
                    &pool,
                    p.as_ref(),
                    aggregate_id.as_deref(),
                    config.max_attempts,
                )
                .await?;
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        Command::Discard { id, reason } => {
            let pool = connect_pool(&config).await?;
            if reason.trim().is_empty() {
                return Err("a discard needs a non-empty --reason".into());
            }
            if !dead_letters::discard(&pool, id, reason.trim()).await? {
                return Err(format!("no parked dead letter with id {id}").into());
            }
            println!("discarded dead letter {id}");
        }
    }
    Ok(())
}
