//! The error a request can end in: one variant per answer (status, headers and JSON body), and a
//! `From` for each module's error, so that handlers use `?`.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::clerk::EventError;
use crate::clerk::api::ClerkApiError;
use crate::session::SessionError;
use crate::store::StoreError;
use crate::sync::apply::ApplyError;
use crate::verify::VerifyError;

/// How long Svix (or any caller) is asked to wait when the store gave no hint.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// 401 without a challenge: a webhook delivery whose signature or timestamp does not hold.
    #[error("{0}")]
    Unauthorized(String),
    /// 404 with a reason: no such route, a deleted user, an endpoint that is not configured.
    #[error("{0}")]
    NotFound(String),
    /// 401 with `WWW-Authenticate: Bearer`: no token at all.
    #[error("an Authorization: Bearer <Clerk session token> header is required")]
    MissingToken,
    /// 401 with `WWW-Authenticate: Bearer error="invalid_token"`: a malformed, expired or
    /// foreign token.
    #[error("{0}")]
    InvalidToken(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body did not arrive in time")]
    RequestTimeout,
    #[error("body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// A bug: the detail is logged, never sent.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MissingToken | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// The answer's stable name, for log lines (`reason` of a refused delivery or `SyncMe` call).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::MissingToken => "missing_token",
            Self::InvalidToken(_) => "invalid_token",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// A delivery's headers or signature: 401 when it fails authentication, else 400.
impl From<VerifyError> for ApiError {
    fn from(error: VerifyError) -> Self {
        match error.is_unauthorized() {
            true => Self::Unauthorized(error.to_string()),
            false => Self::BadRequest(error.to_string()),
        }
    }
}

/// A verified body that is not a Clerk event this handler can read.
impl From<EventError> for ApiError {
    fn from(error: EventError) -> Self {
        Self::BadRequest(error.to_string())
    }
}

/// A session token refused (401 with its challenge), or its keys out of reach (503).
impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Invalid(reason) => Self::InvalidToken(reason),
            SessionError::KeysUnavailable(reason) => Self::Unavailable {
                reason,
                retry_after: None,
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable {
                reason,
                retry_after,
            } => Self::Unavailable {
                reason,
                retry_after,
            },
            // `apply` retries lost races itself; one escaping here is a bug like any rejection.
            StoreError::ConditionFailed | StoreError::Rejected(_) => {
                Self::Internal(error.to_string())
            }
        }
    }
}

impl From<ClerkApiError> for ApiError {
    fn from(error: ClerkApiError) -> Self {
        match error {
            ClerkApiError::Unavailable {
                reason,
                retry_after,
            } => Self::Unavailable {
                reason,
                retry_after,
            },
            // A key Clerk refuses is a deployment bug, not the caller's.
            ClerkApiError::Rejected(reason) | ClerkApiError::Forbidden(reason) => {
                Self::Internal(reason)
            }
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(error: ApplyError) -> Self {
        match error {
            ApplyError::Store(error) => error.into(),
            ApplyError::Conflict(conflict) => Self::BadRequest(conflict.to_string()),
            ApplyError::Clerk(error) => Self::Unavailable {
                reason: error.reason,
                retry_after: error.retry_after,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(event = "internal_error", detail);
                "internal error".to_owned()
            }
            Self::Unavailable { .. } => "temporarily unavailable, retry later".to_owned(),
            other => other.to_string(),
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        // RFC 6750: a request without credentials gets the scheme alone, a bad token the error.
        let challenge = match self {
            Self::MissingToken => Some("Bearer"),
            Self::InvalidToken(_) => Some("Bearer error=\"invalid_token\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Self::Unavailable { retry_after, .. } = self {
            let seconds = retry_after
                .unwrap_or(DEFAULT_RETRY_AFTER)
                .as_secs_f64()
                .ceil()
                .max(1.0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
        }
        response
    }
}
