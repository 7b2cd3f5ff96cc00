//! `POST /api/me/sync`: an application ensures its signed-in user's document exists, at once,
//! without waiting for the webhook. The user is the Clerk session token's `sub`, never an id the
//! caller names; a user not yet stored is fetched from Clerk and applied by the same decision as
//! webhooks, so a deleted user stays deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;
use tokio::time::{Instant, timeout_at};

use super::{AppState, invocation_id, log_answer, refused};
use crate::clerk::Snapshot;
use crate::clerk::api::{ClerkApi, Patience};
use crate::error::ApiError;
use crate::session::SessionVerifier;
use crate::store::Store;
use crate::sync::apply::{self, Options};
use crate::sync::decide::{Change, Outcome, SkipReason};
use crate::sync::document::{self, Document, Source, State as ItemState};
use crate::sync::item::{ItemId, Kind};

/// A caller (a browser, behind the app) waits on this: answer well within a gateway's patience.
const DEADLINE: Duration = Duration::from_secs(9);

/// Why `SyncMe` answers 404 when nothing configured it.
pub const NO_SESSION_SETTINGS: &str =
    "no session-token settings (CLERK_JWT_KEY or CLERK_JWKS_URL, and CLERK_AUTHORIZED_PARTIES)";

/// What the endpoint needs: a session-token verifier and Clerk's Backend API.
pub struct SyncMe {
    verifier: SessionVerifier,
    clerk: Arc<ClerkApi>,
    in_flight: InFlight,
}

impl SyncMe {
    pub fn new(verifier: SessionVerifier, clerk: Arc<ClerkApi>) -> Self {
        Self {
            verifier,
            clerk,
            in_flight: InFlight::default(),
        }
    }
}

/// Whether the user was already stored, or fetched from Clerk and stored by this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Present,
    Applied,
}

impl Found {
    fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Applied => "applied",
        }
    }
}

pub(super) async fn sync_me(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let mut user_id = None;
    let result = match &state.sync_me {
        Err(reason) => Err(ApiError::NotFound(format!(
            "SyncMe is not configured: {reason}"
        ))),
        Ok(sync_me) => {
            let ensuring = ensure(&state, sync_me, &headers, &mut user_id);
            timeout_at(started + DEADLINE, ensuring)
                .await
                .unwrap_or_else(|_| {
                    Err(ApiError::Unavailable {
                        reason: "Clerk or the store did not answer in time".into(),
                        retry_after: None,
                    })
                })
        }
    };
    let (status, outcome, reason) = match &result {
        Ok((found, _)) => (StatusCode::OK, found.as_str(), None),
        Err(error) => (error.status(), refused(error.status()), Some(error.code())),
    };
    // Never the token, and never the document: ids and outcomes only.
    log_answer!(
        status,
        event = "syncme",
        invocation_id = invocation_id(&headers),
        user_id = user_id.as_ref().map(ItemId::as_str),
        outcome,
        reason,
        error = result.as_ref().err().map(ToString::to_string),
        status = status.as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    match result {
        Ok((found, user)) => {
            Json(json!({ "status": found.as_str(), "user": user })).into_response()
        }
        Err(error) => error.into_response(),
    }
}

async fn ensure(
    state: &AppState,
    sync_me: &SyncMe,
    headers: &HeaderMap,
    user_id: &mut Option<ItemId>,
) -> Result<(Found, Document), ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::MissingToken)?
        .to_str()
        .map_err(|_| ApiError::InvalidToken("the Authorization header is not text".into()))?;
    let session = sync_me.verifier.verify(Some(authorization)).await?;
    let id = session.user_id;
    *user_id = Some(id.clone());
    let store = state.store.as_ref();
    if let Some(found) = stored_user(store, &id).await? {
        return Ok((Found::Present, found));
    }
    // One Clerk request per user however many calls arrive at once: the others wait here, then
    // find the document the first one stored.
    let lock = sync_me.in_flight.lock_for(&id);
    let _only_one = lock.lock().await;
    if let Some(found) = stored_user(store, &id).await? {
        return Ok((Found::Present, found));
    }
    let data = sync_me
        .clerk
        .get_user(&id, Patience::Interactive)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such user in Clerk".into()))?;
    let snapshot = Snapshot::parse(Kind::User, data)
        .map_err(|e| ApiError::Internal(format!("Clerk's user {id} cannot be read: {e}")))?;
    let options = Options {
        source: Source::SyncMe(OffsetDateTime::now_utc()),
        tombstone_ttl_seconds: state.tombstone_ttl_seconds,
        guard: None,
    };
    let report = apply::apply(store, Change::Upsert(&snapshot), options).await?;
    let found = match report.outcome {
        Outcome::Applied => Found::Applied,
        Outcome::Skipped(SkipReason::Deleted) => return Err(deleted()),
        // A webhook stored this or a newer version meanwhile.
        Outcome::Skipped(_) => Found::Present,
    };
    let user = stored_user(store, &id).await?.ok_or_else(deleted)?;
    Ok((found, user))
}

/// The stored user as the endpoint returns it; `None` when nothing is stored; deleted when the
/// item is a tombstone.
async fn stored_user(store: &dyn Store, id: &ItemId) -> Result<Option<Document>, ApiError> {
    let (stored, _) = store.read(id).await?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    match document::state(&stored.document) {
        ItemState::Live {
            kind: Some(Kind::User),
            ..
        } => Ok(Some(document::user_view(&stored.document))),
        _ => Err(deleted()),
    }
}

fn deleted() -> ApiError {
    ApiError::NotFound("the user is deleted".into())
}

/// One lock per user being fetched; entries go away with their last holder.
#[derive(Default)]
struct InFlight(Mutex<HashMap<ItemId, Weak<tokio::sync::Mutex<()>>>>);

impl InFlight {
    fn lock_for(&self, id: &ItemId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = locks.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(id.clone(), Arc::downgrade(&lock));
        lock
    }
}
