//! Extractors shared by the HTTP services, rejecting with problem+json.

use axum::extract::rejection::PathRejection;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use schemas::Problem;
use uuid::Uuid;

/// A 400 problem answer from an extractor.
#[derive(Debug)]
pub struct BadRequest {
    pub code: &'static str,
    pub detail: String,
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        crate::problem_response(Problem::new(
            400,
            self.code,
            "Bad request",
            Some(self.detail),
        ))
    }
}

/// A UUID path segment `{id}`; anything else is a 400 `invalid_id`.
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = BadRequest;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BadRequest> {
        match axum::extract::Path::<Uuid>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) => Ok(Self(id)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(BadRequest {
                code: "invalid_id",
                detail: format!("the id in the path is not a UUID: {}", e.body_text()),
            }),
            Err(other) => Err(BadRequest {
                code: "invalid_path",
                detail: other.body_text(),
            }),
        }
    }
}
