//! Input rules shared by the aggregates.

use crate::DomainError;

pub const MAX_NAME: usize = 255;
pub const MAX_TYPE: usize = 100;
pub const MAX_LABEL: usize = 64;
pub const MAX_LABELS: usize = 100;
pub const MAX_CONCURRENCY: u32 = 1000;
pub const MAX_PRIORITY: u8 = 9;
pub const MAX_RETRIES: u32 = 100;
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
pub const MAX_DEPENDENCIES: usize = 100;
pub const MAX_IDEMPOTENCY_KEY: usize = 200;
pub const MAX_TEXT: usize = 10_000;

/// Trims `value` and checks its length is 1..=`max` characters with no control
/// characters.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String, DomainError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(v.to_string())
}

/// A type name such as `http.fetch`: ASCII letters, digits, `.`, `_`, `-`, `:`, `/`.
pub fn identifier(field: &'static str, value: &str, max: usize) -> Result<String, DomainError> {
    let v = text(field, value, max)?;
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'))
    {
        return Err(DomainError::invalid(
            field,
            format!("{v:?} may only contain ASCII letters, digits and . _ - : /"),
        ));
    }
    Ok(v)
}

/// Capability labels: each an [`identifier`], lower-cased, duplicates removed,
/// in the order given.
pub fn labels(field: &'static str, values: &[String]) -> Result<Vec<String>, DomainError> {
    if values.len() > MAX_LABELS {
        return Err(DomainError::invalid(
            field,
            format!("at most {MAX_LABELS} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let label = identifier(field, v, MAX_LABEL)?.to_ascii_lowercase();
        if !out.contains(&label) {
            out.push(label);
        }
    }
    Ok(out)
}

pub fn concurrency(value: u32) -> Result<u32, DomainError> {
    if value == 0 || value > MAX_CONCURRENCY {
        return Err(DomainError::invalid(
            "max_concurrent_tasks",
            format!("must be 1 to {MAX_CONCURRENCY}"),
        ));
    }
    Ok(value)
}

pub fn json_object(field: &'static str, value: &serde_json::Value) -> Result<(), DomainError> {
    if !value.is_object() {
        return Err(DomainError::invalid(field, "must be a JSON object"));
    }
    Ok(())
}

pub fn timeout(field: &'static str, value: Option<u64>) -> Result<Option<u64>, DomainError> {
    match value {
        Some(0) => Err(DomainError::invalid(field, "must be at least 1 second")),
        Some(v) if v > MAX_TIMEOUT_SECS => Err(DomainError::invalid(
            field,
            format!("must be at most {MAX_TIMEOUT_SECS} seconds"),
        )),
        v => Ok(v),
    }
}

/// [`text`] of at most [`MAX_TEXT`] characters, when given.
pub fn optional_text(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<String>, DomainError> {
    value.map(|v| text(field, &v, MAX_TEXT)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_normalised_and_deduplicated() {
        let got = labels("c", &[" NLP ".into(), "nlp".into(), "web.fetch".into()]).unwrap();
        assert_eq!(got, vec!["nlp", "web.fetch"]);
    }

    #[test]
    fn bad_labels_are_refused() {
        assert!(labels("c", &["has space".into()]).is_err());
        assert!(labels("c", &["".into()]).is_err());
        assert!(labels("c", &["x".repeat(65)]).is_err());
    }

    #[test]
    fn text_refuses_control_characters_and_overlong_values() {
        assert!(text("n", "a\u{0}b", 10).is_err());
        assert!(text("n", &"é".repeat(11), 10).is_err());
        assert_eq!(text("n", "  ok ", 10).unwrap(), "ok");
    }
}
