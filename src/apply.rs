//! Applies one change to the store: read, decide, write on condition; when another writer got
//! there first, read and decide again. Every entry point (webhook, reconcile, `SyncMe`) ends
//! here. A deleted organization or user cascades to its memberships.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::clerk::Snapshot;
use crate::document;
use crate::item::{ItemRef, Kind};
use crate::store::{Condition, RequestCharge, Store, StoreError};
use crate::sync::{self, Change, Context, Decision, KindConflict, Parents, SkipReason};

/// Each failed condition means another writer for the same item committed, so the state is
/// moving towards the newest event; a few rounds settle even a burst of concurrent deliveries.
pub const MAX_ATTEMPTS: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Skipped(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tally {
    pub request_charge: RequestCharge,
    /// Store operations made: the round trips of this change.
    pub round_trips: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    /// Memberships a deleted organization or user took with it.
    pub cascaded: u32,
    pub tally: Tally,
}

/// Asks Clerk whether an object still exists: the resurrection guard's question.
#[async_trait]
pub trait Guard: Send + Sync {
    async fn still_exists(&self, snapshot: &Snapshot) -> Result<bool, GuardError>;
}

/// Clerk could not answer the guard's question now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct GuardError {
    pub reason: String,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The id holds another kind of item: the change is refused and nothing changed.
    #[error(transparent)]
    Conflict(#[from] KindConflict),
    #[error("Clerk could not confirm the item: {0}")]
    Clerk(#[from] GuardError),
}

/// How a change is applied: where it came from, and how old tombstones live.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// `lastEventId` of what is written: the `svix-id`, or `reconcile:<start>` and the like.
    pub event_id: &'a str,
    pub tombstone_ttl_seconds: u32,
    /// Asked before an event older than the tombstone TTL creates an item nothing is stored
    /// for: only a manual replay delivers such an event, and its tombstone may have expired.
    pub guard: Option<&'a dyn Guard>,
}

pub async fn apply(
    store: &dyn Store,
    change: Change<'_>,
    options: Options<'_>,
) -> Result<Report, ApplyError> {
    let now_at = OffsetDateTime::now_utc();
    let now = now_at
        .format(&Rfc3339)
        .map_err(|e| StoreError::Rejected(format!("cannot format the current time: {e}")))?;
    let applier = Applier {
        store,
        options,
        context: Context {
            event_id: options.event_id,
            now: &now,
            tombstone_ttl_seconds: options.tombstone_ttl_seconds,
        },
        now_ms: i64::try_from(now_at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
    };
    let mut tally = Tally::default();
    let mut outcome = applier.apply_one(change, &mut tally).await?;
    if let (Change::Upsert(Snapshot::Membership(membership)), Outcome::Applied) = (change, outcome)
    {
        // The organization or user may have been deleted between our look at them and our write,
        // its cascade's query running before the membership existed: look again, and finish
        // that cascade here.
        if applier.parents(change, &mut tally).await? == Parents::Deleted {
            let orphan = ItemRef {
                kind: Kind::Membership,
                id: membership.id.clone(),
            };
            applier
                .apply_one(Change::Delete(&orphan), &mut tally)
                .await?;
            outcome = Outcome::Skipped(SkipReason::ParentDeleted);
        }
    }
    let mut cascaded = 0;
    if let Change::Delete(parent) = change {
        // Also when the tombstone was already there: a cascade cut short by a failure is
        // finished by the delivery's retry.
        if matches!(
            outcome,
            Outcome::Applied | Outcome::Skipped(SkipReason::Deleted)
        ) {
            cascaded = applier.cascade(parent, &mut tally).await?;
        }
    }
    Ok(Report {
        outcome,
        cascaded,
        tally,
    })
}

struct Applier<'a> {
    store: &'a dyn Store,
    options: Options<'a>,
    context: Context<'a>,
    now_ms: i64,
}

impl Applier<'_> {
    async fn apply_one(
        &self,
        change: Change<'_>,
        tally: &mut Tally,
    ) -> Result<Outcome, ApplyError> {
        let id = change.id();
        let parents = self.parents(change, tally).await?;
        let mut gone_from_clerk = None;
        for _ in 0..MAX_ATTEMPTS {
            let (stored, charge) = self.store.read(id).await?;
            tally.request_charge += charge;
            tally.round_trips += 1;
            let document = stored.as_ref().map(|s| &s.document);
            let mut outcome = Outcome::Applied;
            let mut write = match sync::plan(document, change, parents, self.context)? {
                Decision::Skip(reason) => return Ok(Outcome::Skipped(reason)),
                Decision::Write(document) => document,
            };
            if stored.is_none() && self.needs_guard(change) {
                if gone_from_clerk.is_none() {
                    gone_from_clerk = Some(self.gone_from_clerk(change).await?);
                }
                if gone_from_clerk == Some(true) {
                    let deleted = ItemRef {
                        kind: change.kind(),
                        id: id.clone(),
                    };
                    write = document::tombstone(
                        &deleted,
                        self.context.event_id,
                        self.context.now,
                        self.context.tombstone_ttl_seconds,
                    );
                    outcome = Outcome::Skipped(SkipReason::Deleted);
                }
            }
            let condition = Condition::for_replacing(stored.as_ref());
            tally.round_trips += 1;
            match self.store.write(id, &write, &condition).await {
                Ok(charge) => {
                    tally.request_charge += charge;
                    return Ok(outcome);
                }
                Err(StoreError::ConditionFailed) => {
                    tracing::debug!(item_id = %id, "lost a write race; deciding again");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(
            StoreError::unavailable(format!("still contended after {MAX_ATTEMPTS} attempts"))
                .into(),
        )
    }

    /// A membership's organization and user, as stored: either one tombstoned makes the
    /// membership's change a no-op. Other kinds, and deletes, have no parents to ask about.
    async fn parents(&self, change: Change<'_>, tally: &mut Tally) -> Result<Parents, StoreError> {
        let Change::Upsert(Snapshot::Membership(membership)) = change else {
            return Ok(Parents::Live);
        };
        for parent in [&membership.organization_id, &membership.user_id] {
            let (stored, charge) = self.store.read(parent).await?;
            tally.request_charge += charge;
            tally.round_trips += 1;
            if stored.is_some_and(|s| document::state(&s.document).is_tombstone()) {
                return Ok(Parents::Deleted);
            }
        }
        Ok(Parents::Live)
    }

    /// An upsert for an item nothing is stored for, older than any tombstone could be.
    fn needs_guard(&self, change: Change<'_>) -> bool {
        let Change::Upsert(snapshot) = change else {
            return false;
        };
        let ttl_ms = i64::from(self.options.tombstone_ttl_seconds) * 1000;
        self.options.guard.is_some() && snapshot.times().updated_at_ms < self.now_ms - ttl_ms
    }

    async fn gone_from_clerk(&self, change: Change<'_>) -> Result<bool, GuardError> {
        let (Some(guard), Change::Upsert(snapshot)) = (self.options.guard, change) else {
            return Ok(false);
        };
        let exists = guard.still_exists(snapshot).await?;
        tracing::info!(
            item_id = %snapshot.id(),
            kind = %snapshot.kind(),
            exists,
            "resurrection guard: asked Clerk about an old event for an item nothing is stored for"
        );
        Ok(!exists)
    }

    /// Tombstones every live membership of a deleted organization or user.
    async fn cascade(&self, parent: &ItemRef, tally: &mut Tally) -> Result<u32, ApplyError> {
        if parent.kind == Kind::Membership {
            return Ok(0);
        }
        // Collected first: one parent's memberships are few, and writing while a scan is open
        // would keep the scan's snapshot (or page) alive across every write.
        let memberships = self.store.memberships_of(parent).await?;
        tally.round_trips += 1;
        let mut cascaded = 0;
        for id in memberships {
            let membership = ItemRef {
                kind: Kind::Membership,
                id,
            };
            if self.apply_one(Change::Delete(&membership), tally).await? == Outcome::Applied {
                cascaded += 1;
            }
        }
        Ok(cascaded)
    }
}
