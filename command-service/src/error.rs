//! The service's one error type, mapped once to an HTTP problem+json answer.
//! Database and internal failures are logged and never shown to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cqrs_es::AggregateError;
use domain::DomainError;
use schemas::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (syntax, header, path).
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    /// The body is well-formed but breaks a rule or a type.
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("request body larger than the limit (MAX_BODY_BYTES)")]
    PayloadTooLarge,
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    #[error("missing or unknown API token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    /// The aggregate's state or version does not allow the command.
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// A dependency the command needs is down.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::Conflict { code, .. } => code,
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "Bad request",
            Self::Unprocessable { .. } => "Invalid request",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::PayloadTooLarge => "Payload too large",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Unauthorized => "Unauthorized",
            Self::NotFound(_) => "Not found",
            Self::Conflict { .. } => "Conflict",
            Self::Unavailable(_) => "Service unavailable",
            Self::Internal(_) => "Internal error",
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let detail = e.to_string();
        match e {
            DomainError::NotFound(_) => Self::NotFound(detail),
            DomainError::Invalid { .. } => Self::Unprocessable {
                code: e.code(),
                detail,
            },
            _ => Self::Conflict {
                code: e.code(),
                detail,
            },
        }
    }
}

impl From<AggregateError<DomainError>> for ApiError {
    fn from(e: AggregateError<DomainError>) -> Self {
        match e {
            AggregateError::UserError(d) => d.into(),
            AggregateError::AggregateConflict => Self::Conflict {
                code: "version_conflict",
                detail: "another command changed this aggregate at the same time; reload and retry"
                    .into(),
            },
            AggregateError::DatabaseConnectionError(e) => {
                Self::Unavailable(format!("event store unreachable: {e}"))
            }
            AggregateError::DeserializationError(e) => {
                Self::Internal(format!("stored event or snapshot unreadable: {e}"))
            }
            AggregateError::UnexpectedError(e) => Self::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let detail = match &self {
            Self::Internal(_) => {
                tracing::error!(error = %self, "request failed");
                Some("an internal error occurred; the request id locates it in the logs".into())
            }
            Self::Unavailable(_) => {
                tracing::warn!(error = %self, "dependency unavailable");
                Some(self.to_string())
            }
            _ => Some(self.to_string()),
        };
        service_kit::problem_response(Problem::new(
            status.as_u16(),
            self.code(),
            self.title(),
            detail,
        ))
    }
}
