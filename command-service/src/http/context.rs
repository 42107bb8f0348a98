//! Who is asking and which request this is: request, correlation and causation
//! ids (assigned by [`assign_ids`]) and the actor (from the API token).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use schemas::envelope::metadata_keys;
use schemas::EventMetadata;
use uuid::Uuid;

use super::AppState;
use crate::error::ApiError;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
pub static CAUSATION_ID: HeaderName = HeaderName::from_static("x-causation-id");
pub static ACTOR: HeaderName = HeaderName::from_static("x-actor");

const MAX_ID: usize = 128;

/// Makes sure every request has a valid request id and correlation id
/// (taken from the client when given, new otherwise), and echoes both back.
pub async fn assign_ids(mut request: Request, next: Next) -> Response {
    let mut ids = Vec::with_capacity(2);
    for name in [&REQUEST_ID, &CORRELATION_ID] {
        let value = match request.headers().get(name) {
            Some(v) => match valid_id(v) {
                Some(v) => v,
                None => {
                    return ApiError::bad_request(
                        "invalid_header",
                        format!("{name} must be 1-{MAX_ID} characters of A-Z a-z 0-9 . _ : -"),
                    )
                    .into_response()
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

fn valid_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= MAX_ID
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    ok.then(|| s.to_string())
}

/// The ids and actor that every event of a command carries in its metadata.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub metadata: EventMetadata,
}

impl RequestContext {
    /// The metadata map stored with the events, stamped with the decision time.
    pub fn event_metadata(
        &self,
        occurred_at: chrono::DateTime<chrono::Utc>,
    ) -> HashMap<String, String> {
        let mut map = self.metadata.to_map();
        map.insert(metadata_keys::OCCURRED_AT.into(), occurred_at.to_rfc3339());
        map
    }
}

impl FromRequestParts<AppState> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        let header = |name: &HeaderName| headers.get(name).and_then(valid_id);
        let request_id = header(&REQUEST_ID).unwrap_or_else(|| Uuid::new_v4().to_string());
        let correlation_id = header(&CORRELATION_ID).unwrap_or_else(|| request_id.clone());
        let causation_id = match headers.get(&CAUSATION_ID) {
            None => request_id.clone(),
            Some(v) => valid_id(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_header",
                    format!("{CAUSATION_ID} must be 1-{MAX_ID} characters of A-Z a-z 0-9 . _ : -"),
                )
            })?,
        };
        let actor = authenticate(headers, &state.tokens)?;
        Ok(Self {
            metadata: EventMetadata {
                actor,
                correlation_id,
                causation_id,
                request_id,
            },
        })
    }
}

/// API tokens → actor names; empty means authentication is off.
#[derive(Debug, Default)]
pub struct Tokens(HashMap<String, String>);

impl Tokens {
    /// Parses `actor=token,actor=token`.
    pub fn parse(spec: Option<&str>) -> Result<Arc<Self>, String> {
        let mut map = HashMap::new();
        for pair in spec
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (actor, token) = pair
                .split_once('=')
                .ok_or_else(|| format!("API token entry {pair:?} is not actor=token"))?;
            if actor.is_empty() || token.len() < 16 {
                return Err(format!(
                    "API token entry for {actor:?} needs an actor and a token of at least 16 characters"
                ));
            }
            map.insert(token.to_string(), actor.to_string());
        }
        Ok(Arc::new(Self(map)))
    }

    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }
}

fn authenticate(headers: &HeaderMap, tokens: &Tokens) -> Result<String, ApiError> {
    if !tokens.enabled() {
        return match headers.get(&ACTOR) {
            None => Ok("anonymous".into()),
            Some(v) => valid_id(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_header",
                    format!("{ACTOR} must be 1-{MAX_ID} characters of A-Z a-z 0-9 . _ : -"),
                )
            }),
        };
    }
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    tokens
        .0
        .get(token.trim())
        .cloned()
        .ok_or(ApiError::Unauthorized)
}

/// The version a conditional command expects, from `If-Match: "<version>"`.
pub fn expected_version(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|v| *v >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_header",
                "If-Match must be an aggregate version, e.g. \"3\"",
            )
        })
}
