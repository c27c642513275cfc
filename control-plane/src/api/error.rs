//! API errors: one enum, turned into a `Status` body and an HTTP status in
//! one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use skiff_api::meta::{StatusCause, StatusDetails};
use skiff_api::{AdmitError, Status};

use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    MethodNotAllowed(String),
    UnsupportedMediaType(String),
    /// No form the caller accepts is one this server writes.
    NotAcceptable(String),
    Invalid {
        message: String,
        causes: Vec<StatusCause>,
    },
    AlreadyExists(String),
    Conflict(String),
    /// A server-side apply would change fields other managers own.
    ManagerConflict {
        message: String,
        causes: Vec<StatusCause>,
    },
    Gone(String),
    TooLarge(String),
    /// The request body did not arrive in time.
    Timeout(String),
    /// The caller asked too much too often; it may retry after this many
    /// seconds.
    TooManyRequests {
        message: String,
        retry_after: u64,
    },
    Unavailable(String),
    /// A node the request was passed to failed it (unreachable, or an
    /// answer that is not a node's).
    BadGateway(String),
    /// The server cannot do what was asked, through no fault of the
    /// caller's (a stored value its keys do not open).
    Internal(String),
}

impl ApiError {
    /// A single invalid field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Invalid {
            message: format!("{field}: {message}"),
            causes: vec![StatusCause {
                field: field.to_owned(),
                message,
            }],
        }
    }
}

impl From<AdmitError> for ApiError {
    fn from(error: AdmitError) -> Self {
        ApiError::Invalid {
            message: error.to_string(),
            causes: error
                .causes()
                .into_iter()
                .map(|c| StatusCause {
                    field: c.field,
                    message: c.message,
                })
                .collect(),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(error: crate::auth::AuthError) -> Self {
        match error {
            crate::auth::AuthError::Throttled { retry_after } => ApiError::TooManyRequests {
                message: error.to_string(),
                retry_after: retry_after.as_secs(),
            },
            // The server is busy, through no fault of this caller's.
            crate::auth::AuthError::Busy => ApiError::Unavailable(error.to_string()),
            crate::auth::AuthError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::NotFound(_) | StoreError::NamespaceNotFound(_) => {
                ApiError::NotFound(message)
            }
            StoreError::AlreadyExists(_) => ApiError::AlreadyExists(message),
            StoreError::Conflict { .. }
            | StoreError::UidMismatch(_)
            | StoreError::HostClaimed { .. } => ApiError::Conflict(message),
            StoreError::Invalid { field, message } => ApiError::invalid(&field, message),
            StoreError::Compacted { .. } => ApiError::Gone(message),
            StoreError::Unavailable(_) => ApiError::Unavailable(message),
            StoreError::Encryption(_) => ApiError::Internal(message),
            StoreError::QuotaExceeded(_) => ApiError::Forbidden(message),
        }
    }
}

/// What an [`ApiError`] answers: its code, reason, message and causes.
pub struct Parts {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub causes: Vec<StatusCause>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// The error as the parts of its `Status` (for an answer that reports
    /// several outcomes, such as a manifest's objects).
    pub fn parts(self) -> Parts {
        let mut retry_after = None;
        let (code, reason, message, causes) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a valid bearer token is required".to_owned(),
                vec![],
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m, vec![]),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "NotFound", m, vec![]),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "BadRequest", m, vec![]),
            ApiError::Timeout(m) => (StatusCode::REQUEST_TIMEOUT, "Timeout", m, vec![]),
            ApiError::MethodNotAllowed(m) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                m,
                vec![],
            ),
            ApiError::NotAcceptable(m) => (StatusCode::NOT_ACCEPTABLE, "NotAcceptable", m, vec![]),
            ApiError::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                m,
                vec![],
            ),
            ApiError::Invalid { message, causes } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message, causes)
            }
            ApiError::AlreadyExists(m) => (StatusCode::CONFLICT, "AlreadyExists", m, vec![]),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "Conflict", m, vec![]),
            ApiError::ManagerConflict { message, causes } => {
                (StatusCode::CONFLICT, "Conflict", message, causes)
            }
            ApiError::Gone(m) => (StatusCode::GONE, "Gone", m, vec![]),
            ApiError::TooLarge(m) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                m,
                vec![],
            ),
            ApiError::TooManyRequests {
                message,
                retry_after: after,
            } => {
                retry_after = Some(after);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    message,
                    vec![],
                )
            }
            ApiError::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                m,
                vec![],
            ),
            ApiError::BadGateway(m) => (StatusCode::BAD_GATEWAY, "BadGateway", m, vec![]),
            ApiError::Internal(m) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                m,
                vec![],
            ),
        };
        Parts {
            code,
            reason,
            message,
            causes,
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Parts {
            code,
            reason,
            message,
            causes,
            mut retry_after,
        } = self.parts();
        let mut status = Status::failure(code.as_u16(), reason, message);
        if !causes.is_empty() {
            status.details = Some(StatusDetails {
                causes,
                ..Default::default()
            });
        }
        let mut response = (code, Json(status)).into_response();
        if code == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if code == StatusCode::SERVICE_UNAVAILABLE {
            retry_after = Some(1);
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}
