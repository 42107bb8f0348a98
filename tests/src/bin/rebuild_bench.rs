//! Rebuild throughput benchmark: fills a private stream with N events (valid
//! task events, two per task), then rebuilds the Postgres read models from it
//! and prints events per second. A benchmark, not a test.
//!
//! `cargo run --release -p tests --bin rebuild_bench -- [events] [batch]`
//! (defaults 500000 and 1000).

use std::time::Instant;

use projectors::read_models::ReadModels;
use projectors::rebuild::{rebuild, Finish};
use schemas::events::{TaskEvent, TaskQueued, TaskSubmitted};
use schemas::{subjects, EventEnvelope, EventMetadata};
use serde_json::json;
use tests::{NatsServer, TestDb};
use uuid::Uuid;

fn envelope(task: Uuid, sequence: i64, event: &TaskEvent) -> Vec<u8> {
    let id = task.to_string();
    let env = EventEnvelope {
        event_id: EventEnvelope::event_id_for(subjects::TASK, &id, sequence),
        aggregate_type: subjects::TASK.into(),
        aggregate_id: id,
        sequence,
        event_type: event.event_type().into(),
        event_version: event.event_version().into(),
        occurred_at: chrono::Utc::now(),
        metadata: EventMetadata {
            actor: "bench".into(),
            correlation_id: "bench".into(),
            causation_id: "bench".into(),
            request_id: "bench".into(),
        },
        payload: serde_json::to_value(event).unwrap_or_default(),
        hash: None,
    };
    serde_json::to_vec(&env).unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(500_000);
    let batch: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let pool = db.pool().await;
    projectors::migrator().run(&pool).await.expect("migrate");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: subjects::DEFAULT_STREAM.into(),
        subjects: vec![subjects::EVENTS_WILDCARD.into()],
        ..Default::default()
    })
    .await
    .expect("stream");

    eprintln!("publishing {events} events …");
    let started = Instant::now();
    let mut pending = Vec::with_capacity(4096);
    for i in 0..events / 2 {
        let task = Uuid::new_v4();
        let submitted = TaskEvent::TaskSubmitted(TaskSubmitted {
            task_type: if i % 3 == 0 {
                "text.summarize".into()
            } else {
                "echo".into()
            },
            input: json!({"text": format!("benchmark task number {i} about quarterly reports")}),
            required_capabilities: vec!["echo".into()],
            priority: (i % 10) as u8,
            target_agent_id: None,
            schedule_at: None,
            queue_timeout_secs: None,
            execution_timeout_secs: Some(60),
            max_retries: 3,
            idempotency_key: None,
            parent_task_id: None,
            depends_on: vec![],
        });
        let queued = TaskEvent::TaskQueued(TaskQueued { attempt: 1 });
        let subject = subjects::event_subject(subjects::TASK, &task.to_string());
        for (seq, e) in [(1, &submitted), (2, &queued)] {
            let ack = js
                .publish(subject.clone(), envelope(task, seq, e).into())
                .await
                .expect("publish");
            pending.push(ack);
        }
        if pending.len() >= 4096 {
            for a in pending.drain(..) {
                a.await.expect("ack");
            }
        }
    }
    for a in pending.drain(..) {
        a.await.expect("ack");
    }
    let publish_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "published in {publish_secs:.1} s ({:.0} events/s); rebuilding …",
        events as f64 / publish_secs
    );
    let mut last_report = Instant::now();
    let report = rebuild(
        &pool,
        &js,
        subjects::DEFAULT_STREAM,
        &ReadModels,
        Finish::Swap,
        batch,
        |done, end| {
            if last_report.elapsed().as_secs() >= 10 {
                eprintln!("  {done}/{end} events");
                last_report = Instant::now();
            }
        },
    )
    .await
    .expect("rebuild");
    println!(
        "rebuild of read_models from the stream: {} events in {:.1} s = {:.0} events/s (batch {batch})",
        report.events, report.seconds, report.events_per_second
    );
}
