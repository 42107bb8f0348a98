//! Request and correlation ids: every request gets both (the client's when
//! valid, new ones otherwise), every response echoes them.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use schemas::Problem;
use uuid::Uuid;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
pub static CAUSATION_ID: HeaderName = HeaderName::from_static("x-causation-id");

/// Longest accepted id.
pub const MAX_ID: usize = 128;

/// What an id header may hold.
pub fn rule(name: &HeaderName) -> String {
    format!("{name} must be 1-{MAX_ID} characters of A-Z a-z 0-9 . _ : -")
}

/// Whether `s` is a valid request, correlation or causation id.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

/// The header's value when it is a valid id.
pub fn valid_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    is_valid_id(s).then(|| s.to_string())
}

/// Middleware: makes sure the request has valid request and correlation ids
/// (400 problem for an invalid one) and echoes both on the response.
pub async fn assign_ids(mut request: Request, next: Next) -> Response {
    let mut ids = Vec::with_capacity(2);
    for name in [&REQUEST_ID, &CORRELATION_ID] {
        let value = match request.headers().get(name) {
            Some(v) => match valid_id(v) {
                Some(v) => v,
                None => {
                    return crate::problem_response(Problem::new(
                        400,
                        "invalid_header",
                        "Bad request",
                        Some(rule(name)),
                    ))
                }
            },
            None => Uuid::new_v4().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            request.headers_mut().insert(name.clone(), v.clone());
            ids.push((name.clone(), v));
        }
    }
    let mut response = next.run(request).await;
    response.headers_mut().extend(ids);
    response
}
