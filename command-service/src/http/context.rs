//! Who is asking and which request this is: request, correlation and causation
//! ids (assigned by `service_kit::ids::assign_ids`) and the actor (from the API token).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use schemas::envelope::metadata_keys;
use schemas::EventMetadata;
use service_kit::ids::{rule, valid_id, CAUSATION_ID, CORRELATION_ID, REQUEST_ID};
use uuid::Uuid;

use super::AppState;
use crate::error::ApiError;

pub static ACTOR: HeaderName = HeaderName::from_static("x-actor");

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
            Some(v) => valid_id(v)
                .ok_or_else(|| ApiError::bad_request("invalid_header", rule(&CAUSATION_ID)))?,
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
            Some(v) => {
                valid_id(v).ok_or_else(|| ApiError::bad_request("invalid_header", rule(&ACTOR)))
            }
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
