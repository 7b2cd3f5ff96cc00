//! The HTTP surface the Functions host talks to: readiness on `/`, webhook deliveries on
//! `/api/ClerkWebhook`, the timer's invocations on `/Reconcile`, `SyncMe` on `/api/me/sync`,
//! and a JSON status for everything else.

mod sync_me;
mod timer;
mod webhook;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::Mutex;
use tracing::Level;

use crate::clerk::api::ClerkApi;
use crate::error::ApiError;
use crate::store::Store;
use crate::verify::Verifier;

pub use self::sync_me::{NO_SESSION_SETTINGS, SyncMe};

pub const WEBHOOK_PATH: &str = "/api/ClerkWebhook";
/// The host invokes a non-HTTP function at its name, without the `api` route prefix.
pub const TIMER_PATH: &str = "/Reconcile";
pub const SYNC_ME_PATH: &str = "/api/me/sync";

pub struct AppState {
    pub verifier: Verifier,
    pub store: Arc<dyn Store>,
    pub tombstone_ttl_seconds: u32,
    /// The Clerk Backend API, when `CLERK_SECRET_KEY` is set: the resurrection guard, the timer's
    /// reconcile.
    pub clerk: Option<Arc<ClerkApi>>,
    /// `SyncMe`, or why it is not configured (it then answers 404 saying so).
    sync_me: Result<SyncMe, String>,
    /// Held while the timer's reconcile runs, so that a second invocation never overlaps it.
    reconciling: Mutex<()>,
}

impl AppState {
    pub fn new(
        verifier: Verifier,
        store: Arc<dyn Store>,
        tombstone_ttl_seconds: u32,
        clerk: Option<Arc<ClerkApi>>,
    ) -> Self {
        Self {
            verifier,
            store,
            tombstone_ttl_seconds,
            clerk,
            sync_me: Err(NO_SESSION_SETTINGS.into()),
            reconciling: Mutex::new(()),
        }
    }

    /// Serves `SyncMe` with `sync_me`, or answers 404 with `reason`.
    pub fn with_sync_me(mut self, sync_me: Result<SyncMe, String>) -> Self {
        self.sync_me = sync_me;
        self
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(ready))
        .route(WEBHOOK_PATH, post(webhook::webhook))
        .route(TIMER_PATH, post(timer::reconcile))
        .route(SYNC_ME_PATH, post(sync_me::sync_me))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(|| async { ApiError::NotFound("not found".into()) })
        .with_state(state)
}

/// The header the Functions host names each invocation with; logged so that a line can be joined
/// to the host's own record of the request.
const INVOCATION_ID: &str = "x-azure-functions-invocationid";

/// The invocation id the host sent, if any (never more than an id's worth of it).
fn invocation_id(headers: &HeaderMap) -> Option<&str> {
    let id = headers.get(INVOCATION_ID)?.to_str().ok()?;
    (id.len() <= 64).then_some(id)
}

/// How a request answered with an error status ended, for log lines: refused (4xx) or failed
/// (5xx).
fn refused(status: StatusCode) -> &'static str {
    match status.is_server_error() {
        true => "failed",
        false => "refused",
    }
}

/// The level an answer's event is logged at: information for a success, a warning for 4xx and
/// 503 (the caller's mistake, or a wait), an error for any other 5xx (a bug). The Functions host
/// gives stdout lines (information) and stderr lines (warnings, errors) their levels in
/// Application Insights.
fn level_of(status: StatusCode) -> Level {
    match status {
        status if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE => {
            Level::ERROR
        }
        status if status.is_client_error() || status.is_server_error() => Level::WARN,
        _ => Level::INFO,
    }
}

/// Logs one answer's event at the level its status calls for.
macro_rules! log_answer {
    ($status:expr, $($fields:tt)+) => {
        $crate::telemetry::log_at!($crate::http::level_of($status), $($fields)+)
    };
}
use log_answer;

/// The host polls this until it answers; it never waits on the store.
async fn ready() -> Json<serde_json::Value> {
    Json(json!({ "status": "ready" }))
}
