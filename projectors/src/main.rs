use std::process::ExitCode;

use clap::Parser;
use projectors::config::Command;
use projectors::{audit, connect_pool, dead_letters, rebuild, select, Config, Projectors};

/// mimalloc (without transparent huge pages, which took a service's RSS
/// from 30 to 50 MiB) instead of the C library's allocator: allocating and
/// freeing were about a sixth of a service's CPU under load in `perf`, most
/// of it glibc's chunk bookkeeping. (The query service uses it too, for
/// memory: see `query-service/src/main.rs`.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    service_kit::allocator::run_main("projectors", async_main)
}

async fn async_main() -> ExitCode {
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
            let projections = select(&config, &only).await?;
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
            let chosen = select(&config, std::slice::from_ref(&projection)).await?;
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
        Command::History {
            aggregate_type,
            id,
            as_of,
            json,
        } => {
            let pool = connect_pool(&config).await?;
            let events = audit::history(&pool, &aggregate_type, &id).await?;
            if events.is_empty() {
                return Err(format!("no {aggregate_type} {id} in the event store").into());
            }
            let state = as_of
                .map(|a| audit::state_at(&aggregate_type, &events, a))
                .transpose()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"events": events, "state": state})
                    )?
                );
            } else {
                print_events(&events);
                if let Some(state) = state {
                    println!(
                        "\nstate as of {}:\n{}",
                        describe(as_of),
                        serde_json::to_string_pretty(&state)?
                    );
                }
            }
        }
        Command::Trace {
            correlation_id,
            json,
        } => {
            let pool = connect_pool(&config).await?;
            let events = audit::trace(&pool, &correlation_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                print_events(&events);
            }
        }
        Command::Export {
            aggregate_type,
            aggregate_id,
            event_type,
            since,
            until,
            out,
        } => {
            let pool = connect_pool(&config).await?;
            let filter = audit::ExportFilter {
                aggregate_type,
                aggregate_id,
                event_type,
                since,
                until,
            };
            let bar = spinner("exporting");
            let started = std::time::Instant::now();
            let n = match out {
                Some(path) => {
                    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
                    audit::export(&pool, &filter, &mut file, |n| bar.set_position(n)).await?
                }
                None => {
                    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
                    audit::export(&pool, &filter, &mut stdout, |n| bar.set_position(n)).await?
                }
            };
            bar.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "exported {n} events in {secs:.1} s ({:.0} events/s)",
                n as f64 / secs.max(1e-9)
            );
        }
        Command::Rebuild {
            projection,
            batch,
            json,
        }
        | Command::Verify {
            projection,
            batch,
            json,
        } => {
            let finish = if matches!(config.command, Some(Command::Verify { .. })) {
                rebuild::Finish::Verify
            } else {
                rebuild::Finish::Swap
            };
            if projection != projectors::read_models::NAME {
                return Err(format!(
                    "rebuild/verify copy the read-model tables; {projection:?} is not supported \
                     (to rebuild the graph, stop it, empty graph_nodes and graph_edges and \
                     delete its checkpoint; for vectors, delete VECTOR_DIR or the Qdrant \
                     collections and the checkpoint)"
                )
                .into());
            }
            let pool = connect_pool(&config).await?;
            let nats = async_nats::connect(config.nats_url.as_str()).await?;
            let js = async_nats::jetstream::new(nats);
            let chosen = select(&config, std::slice::from_ref(&projection)).await?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} events ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(format!("rebuilding {projection}"));
            for p in chosen {
                let report = rebuild::rebuild(
                    &pool,
                    &js,
                    &config.stream_name,
                    p.as_ref(),
                    finish,
                    batch.max(1),
                    |done, end| {
                        bar.set_length(end);
                        bar.set_position(done);
                    },
                )
                .await?;
                bar.finish_and_clear();
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!(
                        "{projection}: {} events in {:.1} s ({:.0} events/s), checkpoint {}{}",
                        report.events,
                        report.seconds,
                        report.events_per_second,
                        report.checkpoint,
                        if report.swapped { ", swapped in" } else { "" }
                    );
                    for d in &report.differences {
                        println!("DIFFERS {} {} ({})", d.table, d.id, d.kind);
                    }
                }
                if finish == rebuild::Finish::Verify && !report.differences.is_empty() {
                    return Err(format!("{} row(s) differ", report.differences.len()).into());
                }
            }
        }
        Command::VerifyChain { json } => {
            let pool = connect_pool(&config).await?;
            let bar = spinner("verifying");
            let started = std::time::Instant::now();
            let report = audit::verify_chain(&pool, |n| bar.set_position(n)).await?;
            bar.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "checked {} events of {} aggregates in {secs:.1} s ({:.0} events/s)",
                    report.events_checked,
                    report.aggregates_checked,
                    report.events_checked as f64 / secs.max(1e-9)
                );
                for b in &report.broken {
                    println!(
                        "BROKEN {}/{} at sequence {}: {}",
                        b.aggregate_type, b.aggregate_id, b.sequence, b.reason
                    );
                }
                if report.broken.is_empty() {
                    println!("every chain holds");
                }
            }
            if !report.broken.is_empty() {
                return Err(format!("{} broken chain(s)", report.broken.len()).into());
            }
        }
    }
    Ok(())
}

fn print_events(events: &[audit::AuditEvent]) {
    for e in events {
        println!(
            "{}/{}#{}  {}  {}  actor={}  correlation={}  causation={}",
            e.aggregate_type,
            e.aggregate_id,
            e.sequence,
            e.occurred_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            e.event_type,
            e.actor.as_deref().unwrap_or(""),
            e.correlation_id.as_deref().unwrap_or(""),
            e.causation_id.as_deref().unwrap_or("")
        );
    }
}

fn describe(as_of: Option<audit::AsOf>) -> String {
    match as_of {
        Some(audit::AsOf::Version(v)) => format!("version {v}"),
        Some(audit::AsOf::Time(t)) => t.to_rfc3339(),
        None => "now".into(),
    }
}

fn spinner(what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {pos} events ({per_sec}) {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(what);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
