//! NATS subject, stream and header names. Every process takes them from here.

/// Default name of the JetStream stream that carries every event.
pub const DEFAULT_STREAM: &str = "SUTAZAI_EVENTS";

/// Prefix of every event subject.
pub const EVENTS_PREFIX: &str = "sutazai.events";

/// Wildcard that the events stream captures.
pub const EVENTS_WILDCARD: &str = "sutazai.events.>";

/// Aggregate type names, as stored in the event store and used in subjects.
pub const AGENT: &str = "agent";
pub const TASK: &str = "task";

/// `sutazai.events.<aggregate_type>.<aggregate_id>`.
pub fn event_subject(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{EVENTS_PREFIX}.{aggregate_type}.{aggregate_id}")
}

/// Every event of one aggregate type: `sutazai.events.<aggregate_type>.*`.
pub fn aggregate_type_subject(aggregate_type: &str) -> String {
    format!("{EVENTS_PREFIX}.{aggregate_type}.*")
}

/// The JetStream de-duplication key of one event:
/// `<aggregate_type>/<aggregate_id>/<sequence>`.
pub fn message_id(aggregate_type: &str, aggregate_id: &str, sequence: i64) -> String {
    format!("{aggregate_type}/{aggregate_id}/{sequence}")
}

/// Header names set on every published event, so that a subscriber can route
/// without parsing the body.
pub mod headers {
    /// JetStream's de-duplication header; value from [`super::message_id`].
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const EVENT_TYPE: &str = "Sutazai-Event-Type";
    pub const EVENT_VERSION: &str = "Sutazai-Event-Version";
    pub const AGGREGATE_SEQUENCE: &str = "Sutazai-Aggregate-Sequence";
    pub const CORRELATION_ID: &str = "Sutazai-Correlation-Id";
    pub const CAUSATION_ID: &str = "Sutazai-Causation-Id";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_message_id_shapes() {
        assert_eq!(event_subject(TASK, "abc"), "sutazai.events.task.abc");
        assert_eq!(aggregate_type_subject(AGENT), "sutazai.events.agent.*");
        assert_eq!(message_id(TASK, "abc", 3), "task/abc/3");
    }
}
