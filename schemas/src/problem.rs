//! RFC 7807 problem details, the body of every HTTP error.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Media type of [`Problem`] bodies.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 7807 problem. `code` is a stable, machine-readable kind
/// (e.g. `illegal_transition`, `version_conflict`) to branch on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type (`about:blank` or `urn:sutazai:problem:<code>`).
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable error kind.
    pub code: String,
}

impl Problem {
    pub fn new(status: u16, code: &str, title: &str, detail: Option<String>) -> Self {
        Self {
            problem_type: format!("urn:sutazai:problem:{code}"),
            title: title.to_string(),
            status,
            detail,
            code: code.to_string(),
        }
    }
}
