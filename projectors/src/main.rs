use std::process::ExitCode;

use clap::Parser;
use projectors::config::Command;
use projectors::{connect_pool, dead_letters, select, Config, Projectors};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("projectors: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    match config.command.clone().unwrap_or(Command::Run { only: vec![] }) {
        Command::Run { only } => {
            let projections = select(&only)?;
            let listener = tokio::net::TcpListener::bind(config.bind).await?;
            let running = Projectors::start(&config, projections, listener).await?;
            shutdown_signal().await;
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
                let report =
                    dead_letters::redrive(&pool, p.as_ref(), aggregate_id.as_deref(), config.max_attempts)
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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
