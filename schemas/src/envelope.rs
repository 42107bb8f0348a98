//! The envelope that carries every event on JetStream (and to live subscribers).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// Keys of the metadata map that the command side stores with every event.
pub mod metadata_keys {
    pub const ACTOR: &str = "actor";
    pub const CORRELATION_ID: &str = "correlation_id";
    pub const CAUSATION_ID: &str = "causation_id";
    pub const REQUEST_ID: &str = "request_id";
    /// RFC 3339 time at which the command that caused the event was decided.
    pub const OCCURRED_AT: &str = "occurred_at";
}

/// Who and what caused an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventMetadata {
    pub actor: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub request_id: String,
}

impl EventMetadata {
    /// Reads the stored metadata map; missing keys become empty strings.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        Self {
            actor: get(metadata_keys::ACTOR),
            correlation_id: get(metadata_keys::CORRELATION_ID),
            causation_id: get(metadata_keys::CAUSATION_ID),
            request_id: get(metadata_keys::REQUEST_ID),
        }
    }

    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            (metadata_keys::ACTOR.to_string(), self.actor.clone()),
            (
                metadata_keys::CORRELATION_ID.to_string(),
                self.correlation_id.clone(),
            ),
            (
                metadata_keys::CAUSATION_ID.to_string(),
                self.causation_id.clone(),
            ),
            (
                metadata_keys::REQUEST_ID.to_string(),
                self.request_id.clone(),
            ),
        ])
    }
}

/// One event as published on `sutazai.events.<aggregate_type>.<aggregate_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventEnvelope {
    /// Stable id of this event: UUIDv5 of its message id, so every copy of
    /// the same event (e.g. a re-publish) has the same id.
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Position of the event within its aggregate, from 1.
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub occurred_at: DateTime<Utc>,
    pub metadata: EventMetadata,
    /// The event in its stored form, `{"<event_type>": {...}}`; decode it with
    /// [`crate::AgentEvent`] or [`crate::TaskEvent`] after [`crate::upcast`].
    pub payload: Value,
    /// SHA-256 (hex) of this event chained to the previous event of the same
    /// aggregate, as stored in the event store (tamper evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl EventEnvelope {
    /// The id every copy of the event `<aggregate_type>/<aggregate_id>/<sequence>` shares.
    pub fn event_id_for(aggregate_type: &str, aggregate_id: &str, sequence: i64) -> Uuid {
        let key = crate::subjects::message_id(aggregate_type, aggregate_id, sequence);
        Uuid::new_v5(&EVENT_ID_NAMESPACE, key.as_bytes())
    }
}

/// Namespace of event ids (a fixed random UUID; changing it changes every id).
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5a7a_2a10_e7e4_4c55_9a55_6e2f_0c1d_9b01);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_stable_per_message_id() {
        let a = EventEnvelope::event_id_for("task", "x", 1);
        assert_eq!(a, EventEnvelope::event_id_for("task", "x", 1));
        assert_ne!(a, EventEnvelope::event_id_for("task", "x", 2));
    }

    #[test]
    fn metadata_round_trips_through_the_stored_map() {
        let m = EventMetadata {
            actor: "ops".into(),
            correlation_id: "c".into(),
            causation_id: "k".into(),
            request_id: "r".into(),
        };
        assert_eq!(EventMetadata::from_map(&m.to_map()), m);
    }
}
