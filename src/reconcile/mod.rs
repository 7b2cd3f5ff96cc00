//! Reconcile: makes the store equal Clerk. Sweeps every Clerk user, organization and membership,
//! compares each with the store by the same decision as webhooks, heals what differs, and
//! tombstones what Clerk no longer has — only after a complete sweep, and only once Clerk
//! confirms each is gone.
//!
//! Memory: one entry per stored item (its id and `State`, about 100 bytes), loaded before the
//! sweep; that is what the deletion check needs. Clerk's pages are handled one at a time.

mod progress;
mod report;

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::clerk::Snapshot;
use crate::clerk::api::{ClerkApi, ClerkApiError, Patience, Sweep};
use crate::store::{RequestCharge, Store};
use crate::sync::apply::{self, ApplyError, Options};
use crate::sync::decide::{
    self, Change, Confirmation, Facts, Outcome, Parents, SkipReason, Verdict,
};
use crate::sync::document::{Source, State};
use crate::sync::item::{ItemId, ItemRef, Kind};

pub use self::progress::{LogProgress, Phase, Progress};
pub use self::report::{Counts, Report, Run, Stopped, Trigger, plural};

/// Store writes in flight at once: enough to keep up with Clerk's pages, few enough not to
/// throttle a serverless account.
pub const WRITE_CONCURRENCY: usize = 16;
/// Ids per deletion check request (Clerk's filters take up to 100).
const CONFIRM_BATCH: usize = 100;

pub struct Settings<'a> {
    pub dry_run: bool,
    pub tombstone_ttl_seconds: u32,
    /// When the run must stop (cleanly, deleting nothing); `None` for no limit.
    pub deadline: Option<Instant>,
    pub progress: &'a dyn Progress,
}

/// `work`, or `Stopped::OutOfTime` once `deadline` passes.
async fn within<T, E: Into<Stopped>>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, Stopped> {
    match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(Stopped::OutOfTime),
        },
        None => work.await.map_err(Into::into),
    }
}

/// The sweep's next page; `None` once complete. An instance without Organizations answers 403
/// to their lists: it has none. Nothing stored is deleted on that alone: confirming a deletion
/// asks again, and a 403 there stops the run.
async fn next_page(
    sweep: &mut Sweep,
    kind: Kind,
    deadline: Option<Instant>,
    run_id: &str,
) -> Result<Option<Vec<Map<String, Value>>>, Stopped> {
    match within(deadline, sweep.next_page()).await {
        Err(Stopped::Clerk(ClerkApiError::Forbidden(reason))) if kind != Kind::User => {
            tracing::warn!(run_id, %kind, reason, "reconcile: Clerk forbids listing these; is the Organizations feature off? Counted as none");
            Ok(None)
        }
        other => other,
    }
}

/// The order of the sweep: memberships last, so that their organizations and users are known.
const ORDER: [Kind; 3] = [Kind::User, Kind::Organization, Kind::Membership];

pub async fn reconcile(store: &dyn Store, clerk: &ClerkApi, settings: Settings<'_>) -> Run {
    let (started, requests_before) = (Instant::now(), clerk.requests_made());
    let source = Source::Reconcile(OffsetDateTime::now_utc());
    let id = source.last_event_id();
    let mut run = Reconcile {
        store,
        clerk,
        settings: &settings,
        source,
        event_id: &id,
        report: Report {
            dry_run: settings.dry_run,
            complete: false,
            users: Counts::default(),
            organizations: Counts::default(),
            memberships: Counts::default(),
        },
        stored: HashMap::new(),
        request_charge: RequestCharge::default(),
    };
    let stopped = run.run().await.err();
    let (mut report, request_charge) = (run.report, run.request_charge);
    report.complete = stopped.is_none();
    Run {
        id,
        report,
        stopped,
        request_charge,
        duration: started.elapsed(),
        clerk_requests: clerk.requests_made() - requests_before,
    }
}

/// What the store held for one id when the run started, and whether Clerk listed it since.
struct Entry {
    state: State,
    seen: bool,
}

struct Reconcile<'a> {
    store: &'a dyn Store,
    clerk: &'a ClerkApi,
    settings: &'a Settings<'a>,
    source: Source<'a>,
    /// The run's id: its documents' `lastEventId`.
    event_id: &'a str,
    report: Report,
    stored: HashMap<String, Entry>,
    request_charge: RequestCharge,
}

impl Reconcile<'_> {
    async fn run(&mut self) -> Result<(), Stopped> {
        self.load_store().await?;
        for kind in ORDER {
            self.sweep(kind).await?;
        }
        // Only now, after every sweep completed, may anything be deleted.
        for kind in ORDER {
            self.delete_gone(kind).await?;
        }
        Ok(())
    }

    /// How the run's writes are applied: stamped with the run, never asking the guard (Clerk
    /// itself is the source).
    fn apply_options(&self) -> Options<'_> {
        Options {
            source: self.source,
            tombstone_ttl_seconds: self.settings.tombstone_ttl_seconds,
            guard: None,
        }
    }

    /// Bounds any wait by the run's deadline.
    async fn in_time<T, E: Into<Stopped>>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Stopped> {
        within(self.settings.deadline, work).await
    }

    async fn load_store(&mut self) -> Result<(), Stopped> {
        let mut states = self.store.states();
        loop {
            let Some((id, state)) = self.in_time(states.try_next()).await? else {
                break;
            };
            if let State::Live {
                kind: Some(kind), ..
            } = state
            {
                self.report.counts_mut(kind).store += 1;
            }
            self.stored.insert(id, Entry { state, seen: false });
        }
        Ok(())
    }

    /// Every page of one kind. The next page is fetched while this one's writes are made, so a
    /// run paced by Clerk does not also wait for the store between pages.
    async fn sweep(&mut self, kind: Kind) -> Result<(), Stopped> {
        let mut sweep: Sweep = match kind {
            Kind::User => self.clerk.users(),
            Kind::Organization => self.clerk.organizations(),
            Kind::Membership => self.clerk.memberships(),
        };
        let deadline = self.settings.deadline;
        let mut page = next_page(&mut sweep, kind, deadline, self.event_id).await?;
        while let Some(items) = page {
            let planned = self.plan(kind, items);
            let fetching = next_page(&mut sweep, kind, deadline, self.event_id);
            let (next, healed) = tokio::join!(fetching, self.heal(kind, planned));
            healed?;
            self.settings
                .progress
                .update(kind, self.report.counts(kind), Phase::Sweeping);
            page = next?;
        }
        Ok(())
    }

    /// One page's items, read and classified: what each needs, counted as Clerk's.
    fn plan(&mut self, kind: Kind, page: Vec<Map<String, Value>>) -> Vec<(Snapshot, Verdict)> {
        let snapshots: Vec<Snapshot> = page
            .into_iter()
            .filter_map(|data| match Snapshot::parse(kind, data) {
                Ok(snapshot) => Some(snapshot),
                Err(error) => {
                    // Never the payload: it may hold personal data.
                    tracing::warn!(run_id = self.event_id, %kind, %error, "reconcile: Clerk sent an item it cannot read; left as it is");
                    None
                }
            })
            .collect();
        self.report.counts_mut(kind).clerk += snapshots.len() as u64;
        snapshots
            .into_iter()
            .map(|snapshot| {
                let verdict = self.classify(&snapshot);
                (snapshot, verdict)
            })
            .collect()
    }

    /// What the decision says about one Clerk item against the store as loaded, marking it seen.
    fn classify(&mut self, snapshot: &Snapshot) -> Verdict {
        let change = Change::Upsert(snapshot);
        let parents = Parents::of(
            change
                .parent_ids()
                .into_iter()
                .flatten()
                .map(|id| self.stored.get(id.as_str()).map(|entry| entry.state)),
        );
        let entry = self.stored.get_mut(snapshot.id().as_str());
        let state = entry.map(|entry| {
            entry.seen = true;
            entry.state
        });
        let facts = Facts {
            parents,
            // The item comes from Clerk itself.
            clerk: Confirmation::NotNeeded,
        };
        decide::decide(state, change, facts).unwrap_or_else(|conflict| {
            tracing::warn!(run_id = self.event_id, item_id = %snapshot.id(), %conflict, "reconcile: the id holds another kind of item; left as it is");
            Verdict::Skip(SkipReason::Unchanged)
        })
    }

    /// Counts each verdict, and (unless a dry run) applies the writes, a few at a time. A write
    /// re-reads and re-decides, so a webhook that wrote a newer version meanwhile wins.
    async fn heal(&mut self, kind: Kind, planned: Vec<(Snapshot, Verdict)>) -> Result<(), Stopped> {
        let (store, dry_run) = (self.store, self.settings.dry_run);
        let options = self.apply_options();
        let results: Vec<Result<(Verdict, RequestCharge), ApplyError>> =
            futures::stream::iter(planned)
                .map(|(snapshot, verdict)| async move {
                    if dry_run || !matches!(verdict, Verdict::Create | Verdict::Update) {
                        return Ok((verdict, RequestCharge::default()));
                    }
                    let report = match apply::apply(store, Change::Upsert(&snapshot), options).await {
                        Ok(report) => report,
                        // Something else took the id since the store was loaded: left as it is,
                        // as `classify` leaves one it sees.
                        Err(ApplyError::Conflict(conflict)) => {
                            tracing::warn!(item_id = %snapshot.id(), %conflict, "reconcile: the id holds another kind of item; left as it is");
                            return Ok((Verdict::Skip(SkipReason::Unchanged), RequestCharge::default()));
                        }
                        Err(other) => return Err(other),
                    };
                    let verdict = match report.outcome {
                        Outcome::Applied => verdict,
                        Outcome::Skipped(reason) => Verdict::Skip(reason),
                    };
                    Ok((verdict, report.tally.request_charge))
                })
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect()
                .await;
        let counts = self.report.counts_mut(kind);
        let mut failure = None;
        for result in results {
            let verdict = match result {
                Ok((verdict, charge)) => {
                    self.request_charge += charge;
                    verdict
                }
                Err(error) => {
                    failure = Some(error);
                    continue;
                }
            };
            match verdict {
                Verdict::Create => counts.created += 1,
                Verdict::Update => counts.updated += 1,
                Verdict::Tombstone | Verdict::Gone => counts.deleted += 1,
                Verdict::Skip(SkipReason::Older) => counts.newer_in_store += 1,
                // A membership Clerk lists while the store holds its parent deleted is left to
                // the parent's cascade, as one not stored is.
                Verdict::Orphaned | Verdict::Skip(_) | Verdict::AskClerk => counts.unchanged += 1,
            }
        }
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// Tombstones the stored items of `kind` Clerk did not list, once Clerk confirms each is gone.
    async fn delete_gone(&mut self, kind: Kind) -> Result<(), Stopped> {
        let candidates: Vec<ItemId> = self
            .stored
            .iter()
            .filter(|(_, entry)| !entry.seen && entry.state.is_live(kind))
            .filter_map(|(id, _)| ItemId::parse(id).ok())
            .collect();
        for batch in candidates.chunks(CONFIRM_BATCH) {
            let gone = self.in_time(self.confirm_gone(kind, batch)).await?;
            for id in gone {
                self.delete(kind, id).await?;
            }
            self.settings.progress.update(
                kind,
                self.report.counts(kind),
                Phase::ConfirmingDeletions,
            );
        }
        Ok(())
    }

    /// Which of `ids` Clerk no longer has: absent from a lookup by id (users, organizations), or
    /// not among its organization's memberships of that user (memberships).
    async fn confirm_gone(&self, kind: Kind, ids: &[ItemId]) -> Result<Vec<ItemId>, Stopped> {
        let existing = match kind {
            Kind::User => self.clerk.existing_users(ids).await?,
            Kind::Organization => self.clerk.existing_organizations(ids).await?,
            Kind::Membership => {
                let mut existing = HashSet::new();
                for id in ids {
                    if self.membership_exists(id).await? {
                        existing.insert(id.clone());
                    }
                }
                existing
            }
        };
        Ok(ids
            .iter()
            .filter(|id| !existing.contains(*id))
            .cloned()
            .collect())
    }

    async fn membership_exists(&self, id: &ItemId) -> Result<bool, Stopped> {
        let (stored, _) = self.store.read(id).await?;
        let Some(document) = stored.map(|s| s.document) else {
            // Removed since the run started: nothing left to delete.
            return Ok(true);
        };
        let link = |field: &str, kind: Kind| {
            let raw = document.get(field).and_then(|v| v.as_str())?;
            ItemId::parse_as(kind, raw).ok()
        };
        let (Some(organization), Some(user)) = (
            link("organizationId", Kind::Organization),
            link("userId", Kind::User),
        ) else {
            // A tombstone by now (a deleted user or organization took it along), or a document
            // without its links: nothing to ask Clerk about, nothing to delete.
            return Ok(true);
        };
        let found = self
            .clerk
            .get_membership(&organization, &user, id, Patience::Batch)
            .await?;
        Ok(found.is_some())
    }

    async fn delete(&mut self, kind: Kind, id: ItemId) -> Result<(), Stopped> {
        if self.settings.dry_run {
            self.report.counts_mut(kind).deleted += 1;
            return Ok(());
        }
        let item = ItemRef { kind, id };
        let options = self.apply_options();
        let applied = self
            .in_time(apply::apply(self.store, Change::Delete(&item), options))
            .await?;
        self.request_charge += applied.tally.request_charge;
        if applied.outcome == Outcome::Applied {
            self.report.counts_mut(kind).deleted += 1;
        }
        // Memberships a deleted user or organization took with it are Clerk's deletions too.
        self.report.memberships.deleted += u64::from(applied.cascaded);
        if let Some(entry) = self.stored.get_mut(item.id.as_str()) {
            entry.state = State::Tombstone { of: Some(kind) };
        }
        Ok(())
    }
}
