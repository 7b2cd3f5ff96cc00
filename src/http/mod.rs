//! The HTTP surface the Functions host talks to: readiness on `/`, webhook deliveries on
//! `/api/ClerkWebhook`, the timer's invocations on `/Reconcile`, `SyncMe` on `/api/me/sync`,
//! and a JSON status for everything else.

mod sync_me;
mod timer;
mod webhook;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::Mutex;

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
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// The host polls this until it answers; it never waits on the store.
async fn ready() -> Json<serde_json::Value> {
    Json(json!({ "status": "ready" }))
}
