//! Applies one user event to the store: read, decide, write on condition; when another writer
//! got there first, read and decide again.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::{Condition, RequestCharge, Store, StoreError};
use crate::sync::{self, Context, Decision, SkipReason, UserEvent};

/// Each failed condition means another delivery for the same user committed, so the state is
/// moving towards the newest event; a few rounds settle even a burst of concurrent deliveries.
pub const MAX_ATTEMPTS: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Skipped(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    pub request_charge: RequestCharge,
    /// Store operations made: the round trips of this delivery.
    pub round_trips: u32,
}

pub async fn apply(
    store: &dyn Store,
    event: UserEvent<'_>,
    event_id: &str,
    tombstone_ttl_seconds: u32,
) -> Result<Report, StoreError> {
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .map_err(|e| StoreError::Rejected(format!("cannot format the current time: {e}")))?;
    let context = Context {
        event_id,
        now: &now,
        tombstone_ttl_seconds,
    };
    let id = event.user_id();
    let mut request_charge = RequestCharge::default();
    let mut round_trips = 0;
    for _ in 0..MAX_ATTEMPTS {
        let (stored, charge) = store.read(id).await?;
        request_charge += charge;
        round_trips += 1;
        let document = match sync::decide(stored.as_ref().map(|s| &s.document), event, context) {
            Decision::Skip(reason) => {
                return Ok(Report {
                    outcome: Outcome::Skipped(reason),
                    request_charge,
                    round_trips,
                });
            }
            Decision::Write(document) => document,
        };
        let condition = Condition::for_replacing(stored.as_ref());
        round_trips += 1;
        match store.write(id, &document, &condition).await {
            Ok(charge) => {
                request_charge += charge;
                return Ok(Report {
                    outcome: Outcome::Applied,
                    request_charge,
                    round_trips,
                });
            }
            Err(StoreError::ConditionFailed) => {
                tracing::debug!(user_id = %id, "lost a write race; deciding again");
            }
            Err(other) => return Err(other),
        }
    }
    Err(StoreError::unavailable(format!(
        "still contended after {MAX_ATTEMPTS} attempts"
    )))
}
