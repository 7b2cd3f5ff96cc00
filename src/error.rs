//! The error a request can end in, and the status and JSON body each kind answers with.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::clerk::api::ClerkApiError;
use crate::store::StoreError;
use crate::sync::apply::ApplyError;

/// How long Svix (or any caller) is asked to wait when the store gave no hint.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("not found")]
    NotFound,
    /// 404 with a reason: a deleted user, or an endpoint that is not configured.
    #[error("{0}")]
    Missing(String),
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
            Self::NotFound | Self::Missing(_) => StatusCode::NOT_FOUND,
            Self::MissingToken | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
                tracing::error!(detail, "internal error");
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
