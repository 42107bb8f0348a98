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

/// Assignments for one agent: `sutazai.agents.<agent_id>.tasks.assigned`.
pub fn agent_assigned(agent_id: &str) -> String {
    format!("sutazai.agents.{agent_id}.tasks.assigned")
}

/// Cancellations for one agent: `sutazai.agents.<agent_id>.tasks.cancelled`.
pub fn agent_cancelled(agent_id: &str) -> String {
    format!("sutazai.agents.{agent_id}.tasks.cancelled")
}

/// Everything sent to one agent: `sutazai.agents.<agent_id>.>`.
pub fn agent_inbox(agent_id: &str) -> String {
    format!("sutazai.agents.{agent_id}.>")
}

/// Heartbeats of one agent: `sutazai.agents.<agent_id>.heartbeat`.
pub fn agent_heartbeat(agent_id: &str) -> String {
    format!("sutazai.agents.{agent_id}.heartbeat")
}

/// Heartbeats of every agent (what the command service listens to).
pub const AGENT_HEARTBEATS: &str = "sutazai.agents.*.heartbeat";

/// Every progress report of one task (core NATS, not stored).
pub fn task_progress(task_id: &str) -> String {
    format!("sutazai.progress.task.{task_id}")
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
    /// The event's chained hash (see `EventEnvelope::hash`).
    pub const EVENT_HASH: &str = "Sutazai-Event-Hash";
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
