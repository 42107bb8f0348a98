//! The query service's one error type, mapped once to problem+json.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed parameter, path or header.
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    /// Well-formed parameters that break a rule (e.g. an unknown status).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    /// The projection has not reached the asked version within the wait.
    #[error("{0}")]
    VersionNotReached(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::VersionNotReached(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::Unprocessable(_) => "validation_failed",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::VersionNotReached(_) => "version_not_reached",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "Bad request",
            Self::Unprocessable(_) => "Invalid parameter",
            Self::NotFound(_) => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::VersionNotReached(_) => "Not yet visible",
            Self::Unavailable(_) => "Service unavailable",
            Self::Internal(_) => "Internal error",
        }
    }

    /// The same error again, for when one failure answers several requests
    /// (a batched read). Only the variants a statement can fail with keep
    /// their kind; anything else is internal.
    pub fn same(&self) -> Self {
        match self {
            Self::Unavailable(s) => Self::Unavailable(s.clone()),
            Self::NotFound(s) => Self::NotFound(s.clone()),
            other => Self::Internal(other.to_string()),
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable(format!("read models unreachable: {e}"))
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = match &self {
            Self::Internal(_) => {
                tracing::error!(error = %self, "request failed");
                "an internal error occurred; the request id locates it in the logs".to_string()
            }
            Self::Unavailable(_) => {
                tracing::warn!(error = %self, "dependency unavailable");
                self.to_string()
            }
            _ => self.to_string(),
        };
        let status = self.status_code();
        let mut response = service_kit::problem_response(Problem::new(
            status.as_u16(),
            self.code(),
            self.title(),
            Some(detail),
        ));
        if matches!(self, Self::VersionNotReached(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
