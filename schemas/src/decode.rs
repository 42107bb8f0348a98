//! Decoding a published event: envelope → upcast payload → typed event, or a
//! kind-tagged reason why not. Every reader of the stream goes through here.

use serde::Deserialize;

use crate::subjects::{AGENT, TASK};
use crate::{upcast, AgentEvent, EventEnvelope, TaskEvent};

/// A decoded event of either aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    Agent(AgentEvent),
    Task(TaskEvent),
}

/// Why a message is not a usable event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not an event envelope: {0}")]
    Envelope(String),
    #[error("unknown aggregate type {0:?}")]
    UnknownAggregate(String),
    #[error(transparent)]
    Version(#[from] upcast::UpcastError),
    #[error("payload is not a known {aggregate} event ({event_type}): {reason}")]
    Payload {
        aggregate: &'static str,
        event_type: String,
        reason: String,
    },
    #[error("envelope says {envelope} but the payload is {payload}")]
    TypeMismatch { envelope: String, payload: String },
}

/// Decodes a message body into its envelope and typed event.
pub fn decode(body: &[u8]) -> Result<(EventEnvelope, DomainEvent), DecodeError> {
    let envelope: EventEnvelope =
        serde_json::from_slice(body).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    // A payload at the current version is read where it is; only an older
    // one is copied to be upcast (every projection decodes every event).
    let upcast_payload;
    let payload = if envelope.event_version == crate::events::V1 {
        &envelope.payload
    } else {
        upcast_payload = upcast::upcast(
            &envelope.event_type,
            &envelope.event_version,
            envelope.payload.clone(),
        )?;
        &upcast_payload
    };
    let payload_error = |aggregate: &'static str, e: serde_json::Error| DecodeError::Payload {
        aggregate,
        event_type: envelope.event_type.clone(),
        reason: e.to_string(),
    };
    let (event, actual_type) = match envelope.aggregate_type.as_str() {
        AGENT => {
            let e = AgentEvent::deserialize(payload).map_err(|e| payload_error(AGENT, e))?;
            let t = e.event_type();
            (DomainEvent::Agent(e), t)
        }
        TASK => {
            let e = TaskEvent::deserialize(payload).map_err(|e| payload_error(TASK, e))?;
            let t = e.event_type();
            (DomainEvent::Task(e), t)
        }
        other => return Err(DecodeError::UnknownAggregate(other.to_string())),
    };
    if actual_type != envelope.event_type {
        return Err(DecodeError::TypeMismatch {
            envelope: envelope.event_type,
            payload: actual_type.to_string(),
        });
    }
    Ok((envelope, event))
}

/// The aggregate a subject `sutazai.events.<type>.<id>` names.
pub fn aggregate_of_subject(subject: &str) -> Option<(String, String)> {
    let rest = subject
        .strip_prefix(crate::subjects::EVENTS_PREFIX)?
        .strip_prefix('.')?;
    let (t, id) = rest.split_once('.')?;
    Some((t.to_string(), id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskEvent;
    use serde_json::json;

    fn envelope(event_type: &str, version: &str, payload: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "event_id": "6f1c2b4e-0000-4000-8000-000000000001",
            "aggregate_type": "task", "aggregate_id": "t1", "sequence": 2,
            "event_type": event_type, "event_version": version,
            "occurred_at": "2026-11-25T12:00:00Z",
            "metadata": {"actor": "a", "correlation_id": "c", "causation_id": "k", "request_id": "r"},
            "payload": payload,
        }))
        .unwrap()
    }

    #[test]
    fn decodes_a_known_event() {
        let (envelope, event) = decode(&envelope(
            "TaskQueued",
            "1.0",
            json!({"TaskQueued": {"attempt": 1}}),
        ))
        .unwrap();
        assert_eq!(envelope.sequence, 2);
        assert!(matches!(event, DomainEvent::Task(TaskEvent::TaskQueued(_))));
    }

    #[test]
    fn each_bad_message_has_its_kind() {
        assert!(matches!(decode(b"not json"), Err(DecodeError::Envelope(_))));
        assert!(matches!(
            decode(&envelope(
                "TaskFrobnicated",
                "1.0",
                json!({"TaskFrobnicated": {}})
            )),
            Err(DecodeError::Payload { .. })
        ));
        assert!(matches!(
            decode(&envelope(
                "TaskQueued",
                "2.0",
                json!({"TaskQueued": {"attempt": 1}})
            )),
            Err(DecodeError::Version(_))
        ));
        assert!(matches!(
            decode(&envelope(
                "TaskStarted",
                "1.0",
                json!({"TaskQueued": {"attempt": 1}})
            )),
            Err(DecodeError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn subject_names_its_aggregate() {
        assert_eq!(
            aggregate_of_subject("sutazai.events.task.abc"),
            Some(("task".into(), "abc".into()))
        );
        assert_eq!(aggregate_of_subject("other.subject"), None);
    }
}
