//! Follows SutazAI task events from NATS as an outside subscriber would:
//! a durable JetStream consumer from a stored position, decoding each
//! envelope with the `schemas` crate alone.
//!
//! `cargo run -p tests --example follow_events -- [nats_url] [start_after]`

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    // The last stream position you handled (kept in your own store).
    let last_handled: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);

    let js = jetstream::new(async_nats::connect(url).await?);
    let stream = js.get_stream(schemas::subjects::DEFAULT_STREAM).await?;
    // A durable consumer keeps its own position on the server: an existing one
    // resumes where it stopped; a new one starts after `last_handled`.
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            "example-follower",
            pull::Config {
                durable_name: Some("example-follower".into()),
                filter_subject: schemas::subjects::aggregate_type_subject(schemas::subjects::TASK),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: last_handled + 1,
                },
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(msg) = messages.next().await {
        let msg = msg?;
        let position = msg.info()?.stream_sequence;
        let envelope: schemas::EventEnvelope = serde_json::from_slice(&msg.payload)?;
        let payload = schemas::upcast::upcast(
            &envelope.event_type,
            &envelope.event_version,
            envelope.payload.clone(),
        )?;
        let event: schemas::TaskEvent = serde_json::from_value(payload)?;
        println!(
            "#{position} task {} v{} {} by {} (correlation {}): {event:?}",
            envelope.aggregate_id,
            envelope.sequence,
            envelope.event_type,
            envelope.metadata.actor,
            envelope.metadata.correlation_id
        );
        msg.ack().await?;
    }
    Ok(())
}
