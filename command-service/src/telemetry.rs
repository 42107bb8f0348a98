//! Structured logging: one line per event, as text or JSON, with the request
//! and correlation ids on every line logged inside a request.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call (e.g. in tests) is a no-op.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
