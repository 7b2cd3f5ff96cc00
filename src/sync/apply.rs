//! Applies one change to the store: read, decide, write on condition; when another writer got
//! there first, read and decide again. Every entry point (webhook, reconcile, `SyncMe`) ends
//! here. What to write is always `decide`'s answer; this file only fetches the facts it asks for
//! (the stored item, a membership's parents, Clerk's word on an old event) and carries it out. A
//! deleted organization or user cascades to its memberships.

use time::OffsetDateTime;

use crate::store::{Condition, RequestCharge, Store, StoreError};
use crate::sync::decide::{
    self, Change, Confirmation, Context, Decision, Facts, KindConflict, Outcome, Parents,
    SkipReason,
};
use crate::sync::document::{self, Source};
use crate::sync::guard::{Guard, GuardError};
use crate::sync::item::{ItemRef, Kind};

/// Each failed condition means another writer for the same item committed, so the state is
/// moving towards the newest event; a few rounds settle even a burst of concurrent deliveries.
pub const MAX_ATTEMPTS: u32 = 16;

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
    pub source: Source<'a>,
    pub tombstone_ttl_seconds: u32,
    /// Asked before an event older than the tombstone TTL creates an item nothing is stored
    /// for: only a manual replay delivers such an event, and its tombstone may have expired.
    /// Only webhooks have one: reconcile and `SyncMe` read the item from Clerk itself.
    pub guard: Option<&'a dyn Guard>,
}

pub async fn apply(
    store: &dyn Store,
    change: Change<'_>,
    options: Options<'_>,
) -> Result<Report, ApplyError> {
    let now_at = OffsetDateTime::now_utc();
    let (event_id, now) = (options.source.last_event_id(), document::rfc3339(now_at));
    let applier = Applier {
        store,
        guard: options.guard,
        context: Context {
            event_id: &event_id,
            now: &now,
            tombstone_ttl_seconds: options.tombstone_ttl_seconds,
        },
        clerk: match options.guard {
            Some(_) => Confirmation::Unasked {
                oldest_tombstone_ms: epoch_ms(now_at)
                    - i64::from(options.tombstone_ttl_seconds) * 1000,
            },
            None => Confirmation::NotNeeded,
        },
    };
    let mut tally = Tally::default();
    let parents = applier.parents(change, &mut tally).await?;
    let mut outcome = applier.apply_one(change, parents, &mut tally).await?;
    if outcome == Outcome::Applied && change.parent_ids().is_some() {
        // The organization or user may have been deleted between our look at them and our write,
        // its cascade's query running before the membership existed: look again, and if one is
        // gone the decision tombstones the membership here.
        let parents = applier.parents(change, &mut tally).await?;
        if parents == Parents::Deleted {
            outcome = applier.apply_one(change, parents, &mut tally).await?;
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

fn epoch_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

struct Applier<'a> {
    store: &'a dyn Store,
    guard: Option<&'a dyn Guard>,
    context: Context<'a>,
    /// What is known of Clerk's view before anyone asks.
    clerk: Confirmation,
}

impl Applier<'_> {
    async fn apply_one(
        &self,
        change: Change<'_>,
        parents: Parents,
        tally: &mut Tally,
    ) -> Result<Outcome, ApplyError> {
        let id = change.id();
        let mut facts = Facts {
            parents,
            clerk: self.clerk,
        };
        for _ in 0..MAX_ATTEMPTS {
            let (stored, charge) = self.store.read(id).await?;
            tally.request_charge += charge;
            tally.round_trips += 1;
            let document = stored.as_ref().map(|s| &s.document);
            let (write, outcome) = loop {
                match decide::plan(document, change, facts, self.context)? {
                    Decision::Skip(reason) => return Ok(Outcome::Skipped(reason)),
                    Decision::Write(write, outcome) => break (write, outcome),
                    // Asked once per change: a lost write race decides again with the answer.
                    Decision::AskClerk => facts.clerk = self.ask_clerk(change).await?,
                }
            };
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

    /// A membership's organization and user, as stored (other kinds, and deletes, have none).
    async fn parents(&self, change: Change<'_>, tally: &mut Tally) -> Result<Parents, StoreError> {
        let Some(ids) = change.parent_ids() else {
            return Ok(Parents::Live);
        };
        let mut states = Vec::with_capacity(ids.len());
        for id in ids {
            let (stored, charge) = self.store.read(id).await?;
            tally.request_charge += charge;
            tally.round_trips += 1;
            states.push(stored.map(|s| document::state(&s.document)));
        }
        Ok(Parents::of(states))
    }

    async fn ask_clerk(&self, change: Change<'_>) -> Result<Confirmation, GuardError> {
        let (Some(guard), Change::Upsert(snapshot)) = (self.guard, change) else {
            return Ok(Confirmation::NotNeeded);
        };
        let exists = guard.still_exists(snapshot).await?;
        tracing::info!(
            event = "resurrection_guard",
            item_id = %snapshot.id(),
            kind = %snapshot.kind(),
            exists,
            "resurrection guard: asked Clerk about an old event for an item nothing is stored for"
        );
        Ok(if exists {
            Confirmation::Exists
        } else {
            Confirmation::Gone
        })
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
            let outcome = self
                .apply_one(Change::Delete(&membership), Parents::Live, tally)
                .await?;
            if outcome == Outcome::Applied {
                cascaded += 1;
            }
        }
        Ok(cascaded)
    }
}
