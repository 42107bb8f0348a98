//! From a JetStream message to the event a projection applies.

pub use schemas::decode::{aggregate_of_subject, DecodeError, DomainEvent};
use schemas::EventEnvelope;

/// One event as a projection sees it.
#[derive(Debug, Clone)]
pub struct ProjectedEvent {
    /// Position in the stream: the global order and the checkpoint unit.
    pub stream_sequence: u64,
    pub envelope: EventEnvelope,
    pub event: DomainEvent,
}

/// Decodes a message body; `stream_sequence` comes from the message info.
pub fn decode(stream_sequence: u64, body: &[u8]) -> Result<ProjectedEvent, DecodeError> {
    let (envelope, event) = schemas::decode::decode(body)?;
    Ok(ProjectedEvent {
        stream_sequence,
        envelope,
        event,
    })
}
