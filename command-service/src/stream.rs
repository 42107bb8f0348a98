//! The JetStream stream every event is published to.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use schemas::subjects::EVENTS_WILDCARD;

/// How the events stream is configured (from [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub name: String,
    /// Re-publishes of one event within this window are dropped.
    pub duplicate_window: Duration,
    /// Zero keeps every event forever (the default, so replays work).
    pub max_age: Duration,
    /// -1 is unlimited.
    pub max_bytes: i64,
}

impl StreamSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            name: config.stream_name.clone(),
            duplicate_window: Duration::from_secs(config.stream_duplicate_window_secs.max(1)),
            max_age: Duration::from_secs(config.stream_max_age_secs),
            max_bytes: config.stream_max_bytes,
        }
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: vec![EVENTS_WILDCARD.to_string()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            max_messages: -1,
            description: Some("SutazAI events, one subject per aggregate".into()),
            ..Default::default()
        }
    }
}

/// Creates the stream, or brings an existing one to the configured limits.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), async_nats::Error> {
    let config = settings.stream_config();
    js.get_or_create_stream(config.clone()).await?;
    js.update_stream(config).await?;
    Ok(())
}
