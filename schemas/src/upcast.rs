//! Bringing stored events of older versions up to the current version on read.
//!
//! Every event type is at version 1.0 today, so [`UPCASTERS`] is empty; the
//! mechanism is in place (and tested) so that the first incompatible change
//! adds one entry here instead of rewriting stored events. Both the event store
//! (through cqrs-es upcasters built from this table) and every stream reader go
//! through [`upcast`].

use serde_json::Value;

/// One step from `from_version` to the next version of one event type.
pub struct Upcaster {
    pub event_type: &'static str,
    pub from_version: &'static str,
    pub to_version: &'static str,
    pub upcast: fn(Value) -> Value,
}

/// The known upcasters, oldest first.
pub const UPCASTERS: &[Upcaster] = &[];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    /// The event is of a version this build does not know (written by a newer
    /// build); a reader must park it, not guess.
    #[error("{event_type} version {version} is newer than this build knows ({known})")]
    UnknownVersion {
        event_type: String,
        version: String,
        known: &'static str,
    },
}

/// Applies the known upcasters in order until `event_type` reaches `current`.
pub fn upcast_with(
    upcasters: &[Upcaster],
    event_type: &str,
    version: &str,
    current: &'static str,
    mut payload: Value,
) -> Result<Value, UpcastError> {
    let mut version = version.to_string();
    while version != current {
        let step = upcasters
            .iter()
            .find(|u| u.event_type == event_type && u.from_version == version)
            .ok_or_else(|| UpcastError::UnknownVersion {
                event_type: event_type.to_string(),
                version: version.clone(),
                known: current,
            })?;
        payload = (step.upcast)(payload);
        version = step.to_version.to_string();
    }
    Ok(payload)
}

/// [`upcast_with`] over this build's [`UPCASTERS`], to [`crate::events::V1`].
pub fn upcast(event_type: &str, version: &str, payload: Value) -> Result<Value, UpcastError> {
    upcast_with(UPCASTERS, event_type, version, crate::events::V1, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rename_percent(v: Value) -> Value {
        let mut v = v;
        if let Some(inner) = v
            .get_mut("TaskProgressReported")
            .and_then(Value::as_object_mut)
        {
            if let Some(p) = inner.remove("pct") {
                inner.insert("percent".into(), p);
            }
        }
        v
    }

    #[test]
    fn current_version_passes_through() {
        let p = json!({"TaskQueued": {"attempt": 1}});
        assert_eq!(upcast("TaskQueued", "1.0", p.clone()).unwrap(), p);
    }

    #[test]
    fn newer_version_is_refused_with_a_kind() {
        let err = upcast("TaskQueued", "2.0", json!({})).unwrap_err();
        assert!(matches!(err, UpcastError::UnknownVersion { .. }));
    }

    #[test]
    fn older_versions_are_chained_up() {
        let table = [
            Upcaster {
                event_type: "TaskProgressReported",
                from_version: "0.8",
                to_version: "0.9",
                upcast: rename_percent,
            },
            Upcaster {
                event_type: "TaskProgressReported",
                from_version: "0.9",
                to_version: "1.0",
                upcast: |v| v,
            },
        ];
        let old = json!({"TaskProgressReported": {"pct": 40}});
        let new = upcast_with(&table, "TaskProgressReported", "0.8", "1.0", old).unwrap();
        assert_eq!(new, json!({"TaskProgressReported": {"percent": 40}}));
    }
}
