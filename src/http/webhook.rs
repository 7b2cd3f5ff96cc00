//! `POST /api/ClerkWebhook`: a Svix delivery, verified on the exact bytes received, parsed, and
//! applied, answered within Svix's patience.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use tokio::time::{Instant, timeout_at};

use super::{AppState, invocation_id, log_answer, refused};
use crate::clerk::ClerkEvent;
use crate::error::ApiError;
use crate::sync::apply::{self, Options, Tally};
use crate::sync::decide::{Change, Outcome};
use crate::sync::document::Source;
use crate::sync::guard::Guard;
use crate::sync::item::{ItemId, ItemRef, Kind};

/// Clerk's payloads are a few KiB; 1 MiB leaves room and bounds what a sender can make us
/// buffer.
const BODY_LIMIT: usize = 1024 * 1024;
/// Svix waits 15 s; answering within 10 s leaves it time to receive the answer. The last second
/// is margin for writing the response.
const DEADLINE: Duration = Duration::from_secs(9);

/// What a delivery ended in when it was accepted (any 2xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepted {
    Stored(Outcome),
    /// An event type the handler does not handle.
    Ignored,
}

/// Facts about one delivery, gathered as it is handled and logged once at the end as the
/// `delivery` event. Never the body, a name or an email.
#[derive(Default)]
struct DeliveryLog {
    event_id: Option<String>,
    event_type: Option<String>,
    item: Option<ItemRef>,
    /// A membership upsert's organization and user.
    parents: Option<[ItemId; 2]>,
    cascaded: u32,
    tally: Tally,
}

impl DeliveryLog {
    /// The id of `kind` the event names: its own item's, or a membership's organization or user.
    fn id_of(&self, kind: Kind) -> Option<&str> {
        let own = self.item.as_ref().filter(|item| item.kind == kind);
        let parent = match (kind, &self.parents) {
            (Kind::Organization, Some([organization, _])) => Some(organization),
            (Kind::User, Some([_, user])) => Some(user),
            _ => None,
        };
        own.map(|item| &item.id).or(parent).map(ItemId::as_str)
    }
}

pub(super) async fn webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let mut log = DeliveryLog::default();
    let result = deliver(&state, &headers, body, started + DEADLINE, &mut log).await;
    let (status, outcome, reason) = match &result {
        Ok(Accepted::Stored(Outcome::Applied)) => (StatusCode::OK, "applied", None),
        Ok(Accepted::Stored(Outcome::Skipped(reason))) => {
            (StatusCode::OK, "skipped", Some(reason.as_str()))
        }
        Ok(Accepted::Ignored) => (StatusCode::OK, "ignored", None),
        Err(error) => (error.status(), refused(error.status()), Some(error.code())),
    };
    log_answer!(
        status,
        event = "delivery",
        invocation_id = invocation_id(&headers),
        event_id = log.event_id.as_deref(),
        event_type = log.event_type.as_deref(),
        kind = log.item.as_ref().map(|item| item.kind.as_str()),
        item_id = log.item.as_ref().map(|item| item.id.as_str()),
        user_id = log.id_of(Kind::User),
        organization_id = log.id_of(Kind::Organization),
        membership_id = log.id_of(Kind::Membership),
        outcome,
        reason,
        error = result.as_ref().err().map(ToString::to_string),
        status = status.as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        cascaded = log.cascaded,
        request_charge = log.tally.request_charge.0,
        round_trips = log.tally.round_trips,
    );
    match result {
        Ok(accepted) => (status, Json(accepted_body(accepted))).into_response(),
        Err(error) => error.into_response(),
    }
}

fn accepted_body(accepted: Accepted) -> serde_json::Value {
    match accepted {
        Accepted::Stored(Outcome::Applied) => json!({ "status": "applied" }),
        Accepted::Stored(Outcome::Skipped(reason)) => {
            json!({ "status": "skipped", "reason": reason.as_str() })
        }
        Accepted::Ignored => json!({ "status": "ignored" }),
    }
}

async fn deliver(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
    log: &mut DeliveryLog,
) -> Result<Accepted, ApiError> {
    let body = read_body(headers, body, deadline).await?;
    let event_id = state.verifier.verify(headers, &body)?;
    log.event_id = Some(event_id.clone());
    let (event_type, event) = ClerkEvent::parse(&body)?;
    log.event_type = Some(event_type);
    let Some(change) = Change::from_event(&event) else {
        return Ok(Accepted::Ignored);
    };
    log.item = Some(ItemRef {
        kind: change.kind(),
        id: change.id().clone(),
    });
    log.parents = change.parent_ids().map(|ids| ids.map(Clone::clone));

    let options = Options {
        source: Source::Webhook(&event_id),
        tombstone_ttl_seconds: state.tombstone_ttl_seconds,
        guard: state.clerk.as_deref().map(|clerk| clerk as &dyn Guard),
    };
    let applying = apply::apply(state.store.as_ref(), change, options);
    let report = timeout_at(deadline, applying)
        .await
        .map_err(|_| ApiError::Unavailable {
            reason: "store did not answer in time".into(),
            retry_after: None,
        })??;
    log.tally = report.tally;
    log.cascaded = report.cascaded;
    Ok(Accepted::Stored(report.outcome))
}

/// The exact bytes received, at most `BODY_LIMIT` of them.
async fn read_body(headers: &HeaderMap, body: Body, deadline: Instant) -> Result<Bytes, ApiError> {
    let too_large = ApiError::PayloadTooLarge { limit: BODY_LIMIT };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > BODY_LIMIT as u64) {
        return Err(too_large);
    }
    let collected = timeout_at(deadline, Limited::new(body, BODY_LIMIT).collect())
        .await
        .map_err(|_| ApiError::RequestTimeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large),
        Err(e) => Err(ApiError::BadRequest(format!(
            "could not read the body: {e}"
        ))),
    }
}
