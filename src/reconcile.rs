//! Reconcile: makes the store equal Clerk. Sweeps every Clerk user, organization and membership,
//! compares each with the store by the same decision as webhooks, heals what differs, and
//! tombstones what Clerk no longer has — only after a complete sweep, and only once Clerk
//! confirms each is gone.
//!
//! Memory: one entry per stored item (its id and `State`, about 100 bytes), loaded before the
//! sweep; that is what the deletion check needs. Clerk's pages are handled one at a time.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

use crate::apply::{self, ApplyError, Options, Outcome};
use crate::clerk::Snapshot;
use crate::clerk::api::{ClerkApi, ClerkApiError, Patience, Sweep};
use crate::document::State;
use crate::item::{ItemId, ItemRef, Kind};
use crate::store::{RequestCharge, Store, StoreError};
use crate::sync::{self, Change, Parents, SkipReason, Verdict};

/// Store writes in flight at once: enough to keep up with Clerk's pages, few enough not to
/// throttle a serverless account.
pub const WRITE_CONCURRENCY: usize = 16;
/// Ids per deletion check request (Clerk's filters take up to 100).
const CONFIRM_BATCH: usize = 100;

/// What one kind's sweep found and did (in a dry run, would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Items Clerk listed.
    pub clerk: u64,
    /// Live items of this kind in the store when the run started.
    pub store: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub unchanged: u64,
    /// Stored items newer than Clerk's listing: a webhook got there during the sweep.
    pub newer_in_store: u64,
}

impl Counts {
    pub fn drift(&self) -> u64 {
        self.created + self.updated + self.deleted
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "clerk {}, store {}, created {}, updated {}, deleted {}, unchanged {}, newer in store {}",
            self.clerk,
            self.store,
            self.created,
            self.updated,
            self.deleted,
            self.unchanged,
            self.newer_in_store
        )
    }
}

/// The SPEC's report: `--json` prints exactly this object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub dry_run: bool,
    pub complete: bool,
    pub users: Counts,
    pub organizations: Counts,
    pub memberships: Counts,
}

impl Report {
    pub fn counts(&self, kind: Kind) -> &Counts {
        match kind {
            Kind::User => &self.users,
            Kind::Organization => &self.organizations,
            Kind::Membership => &self.memberships,
        }
    }

    fn counts_mut(&mut self, kind: Kind) -> &mut Counts {
        match kind {
            Kind::User => &mut self.users,
            Kind::Organization => &mut self.organizations,
            Kind::Membership => &mut self.memberships,
        }
    }

    pub fn drift(&self) -> u64 {
        Kind::ALL
            .iter()
            .map(|&kind| self.counts(kind).drift())
            .sum()
    }
}

/// Why a run stopped before it was complete. Nothing was deleted.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error(transparent)]
    Clerk(#[from] ClerkApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("its time budget ran out")]
    OutOfTime,
}

impl From<ApplyError> for Stopped {
    fn from(error: ApplyError) -> Self {
        match error {
            ApplyError::Store(error) => Self::Store(error),
            // Reconcile never asks the guard, and counts a kind conflict rather than raising it;
            // either reaching here is a bug, and stops the run before any deletion.
            other => Self::Store(StoreError::Rejected(other.to_string())),
        }
    }
}

/// A run's outcome: the report, and why it stopped when it is incomplete.
pub struct Run {
    pub id: String,
    pub report: Report,
    pub stopped: Option<Stopped>,
    /// What its writes (reads and writes of `apply`) cost, in Cosmos request units; the scan of
    /// the store's states is not included.
    pub request_charge: RequestCharge,
}

impl Run {
    /// One line for the run, then one per kind: the timer's invocation `Logs`.
    pub fn summary(&self) -> Vec<String> {
        let mode = if self.report.dry_run {
            " (dry run)"
        } else {
            ""
        };
        let status = match &self.stopped {
            None => "complete".to_owned(),
            Some(reason) => format!("incomplete, nothing deleted: {reason}"),
        };
        let mut lines = vec![format!("{}{mode}: {status}", self.id)];
        lines.extend(
            ORDER
                .iter()
                .map(|&kind| format!("{}: {}", plural(kind), self.report.counts(kind))),
        );
        lines
    }

    /// The run's outcome as one log line of counts (never names or emails).
    pub fn log(&self) {
        let (users, organizations, memberships) = (
            &self.report.users,
            &self.report.organizations,
            &self.report.memberships,
        );
        let stopped = self.stopped.as_ref().map(ToString::to_string);
        tracing::info!(
            run_id = %self.id,
            dry_run = self.report.dry_run,
            complete = self.report.complete,
            stopped,
            users = %users,
            organizations = %organizations,
            memberships = %memberships,
            "reconcile finished"
        );
    }
}

/// How a kind is named in reports: the report's own field names.
pub fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "users",
        Kind::Organization => "organizations",
        Kind::Membership => "memberships",
    }
}

/// Told what a run has done so far, after every page and every deletion batch.
pub trait Progress: Send + Sync {
    fn update(&self, kind: Kind, counts: &Counts, phase: Phase);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Sweeping,
    ConfirmingDeletions,
}

/// Progress as a log line every few seconds: for the timer, and a command not on a terminal.
pub struct LogProgress {
    last: Mutex<Instant>,
}

impl LogProgress {
    const EVERY: Duration = Duration::from_secs(5);
}

impl Default for LogProgress {
    fn default() -> Self {
        Self {
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Progress for LogProgress {
    fn update(&self, kind: Kind, counts: &Counts, phase: Phase) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < Self::EVERY {
            return;
        }
        *last = Instant::now();
        tracing::info!(kind = plural(kind), ?phase, counts = %counts, "reconcile progress");
    }
}

pub struct Settings<'a> {
    pub dry_run: bool,
    pub tombstone_ttl_seconds: u32,
    /// When the run must stop (cleanly, deleting nothing); `None` for no limit.
    pub deadline: Option<Instant>,
    pub progress: &'a dyn Progress,
}

/// The order of the sweep: memberships last, so that their organizations and users are known.
const ORDER: [Kind; 3] = [Kind::User, Kind::Organization, Kind::Membership];

pub async fn reconcile(store: &dyn Store, clerk: &ClerkApi, settings: Settings<'_>) -> Run {
    let started = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let id = format!(
        "reconcile:{}",
        started
            .format(&Rfc3339)
            .unwrap_or_else(|_| started.unix_timestamp().to_string())
    );
    let mut run = Reconcile {
        store,
        clerk,
        settings: &settings,
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

    /// Bounds any wait by the run's deadline.
    async fn in_time<T, E: Into<Stopped>>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Stopped> {
        match self.settings.deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, work).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Stopped::OutOfTime),
            },
            None => work.await.map_err(Into::into),
        }
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

    async fn sweep(&mut self, kind: Kind) -> Result<(), Stopped> {
        let mut sweep: Sweep = match kind {
            Kind::User => self.clerk.users(),
            Kind::Organization => self.clerk.organizations(),
            Kind::Membership => self.clerk.memberships(),
        };
        loop {
            let page = match self.in_time(sweep.next_page()).await {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(()),
                // An instance without Organizations answers 403 to their lists: it has none.
                // Nothing stored is deleted on that alone: confirming a deletion asks again,
                // and a 403 there stops the run.
                Err(Stopped::Clerk(ClerkApiError::Forbidden(reason))) if kind != Kind::User => {
                    tracing::warn!(run_id = self.event_id, %kind, reason, "reconcile: Clerk forbids listing these; is the Organizations feature off? Counted as none");
                    return Ok(());
                }
                Err(other) => return Err(other),
            };
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
            let planned: Vec<(Snapshot, Verdict)> = snapshots
                .into_iter()
                .map(|snapshot| {
                    let verdict = self.classify(&snapshot);
                    (snapshot, verdict)
                })
                .collect();
            self.heal(kind, planned).await?;
            self.settings
                .progress
                .update(kind, self.report.counts(kind), Phase::Sweeping);
        }
    }

    /// What the decision says about one Clerk item against the store as loaded, marking it seen.
    fn classify(&mut self, snapshot: &Snapshot) -> Verdict {
        let parents = match snapshot {
            Snapshot::Membership(membership) => {
                let deleted = [&membership.organization_id, &membership.user_id]
                    .iter()
                    .any(|id| {
                        self.stored
                            .get(id.as_str())
                            .is_some_and(|e| e.state.is_tombstone())
                    });
                if deleted {
                    Parents::Deleted
                } else {
                    Parents::Live
                }
            }
            _ => Parents::Live,
        };
        let entry = self.stored.get_mut(snapshot.id().as_str());
        let state = entry.map(|entry| {
            entry.seen = true;
            entry.state
        });
        sync::decide(state, Change::Upsert(snapshot), parents).unwrap_or_else(|conflict| {
            tracing::warn!(run_id = self.event_id, item_id = %snapshot.id(), %conflict, "reconcile: the id holds another kind of item; left as it is");
            Verdict::Skip(SkipReason::Unchanged)
        })
    }

    /// Counts each verdict, and (unless a dry run) applies the writes, a few at a time. A write
    /// re-reads and re-decides, so a webhook that wrote a newer version meanwhile wins.
    async fn heal(&mut self, kind: Kind, planned: Vec<(Snapshot, Verdict)>) -> Result<(), Stopped> {
        let (store, dry_run) = (self.store, self.settings.dry_run);
        let options = Options {
            event_id: self.event_id,
            tombstone_ttl_seconds: self.settings.tombstone_ttl_seconds,
            guard: None,
        };
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
                Verdict::Tombstone => counts.deleted += 1,
                Verdict::Skip(SkipReason::Older) => counts.newer_in_store += 1,
                Verdict::Skip(_) => counts.unchanged += 1,
            }
        }
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// Tombstones the stored items of `kind` Clerk did not list, once Clerk confirms each is gone.
    async fn delete_gone(&mut self, kind: Kind) -> Result<(), Stopped> {
        let candidates: Vec<String> = self
            .stored
            .iter()
            .filter(|(_, entry)| !entry.seen && entry.state.is_live(kind))
            .map(|(id, _)| id.clone())
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
    async fn confirm_gone(&self, kind: Kind, ids: &[String]) -> Result<Vec<ItemId>, Stopped> {
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
            .filter_map(|id| ItemId::parse(id).ok())
            .collect())
    }

    async fn membership_exists(&self, id: &str) -> Result<bool, Stopped> {
        let Ok(item_id) = ItemId::parse(id) else {
            return Ok(false);
        };
        let (stored, _) = self.store.read(&item_id).await?;
        let Some(document) = stored.map(|s| s.document) else {
            // Tombstoned or removed since the run started: nothing left to delete.
            return Ok(true);
        };
        let link = |field: &str| document.get(field).and_then(|v| v.as_str()).unwrap_or("");
        let (organization, user) = (link("organizationId"), link("userId"));
        if organization.is_empty() || user.is_empty() {
            return Ok(true);
        }
        let found = self
            .clerk
            .get_membership(organization, user, id, Patience::Batch)
            .await?;
        Ok(found.is_some())
    }

    async fn delete(&mut self, kind: Kind, id: ItemId) -> Result<(), Stopped> {
        if self.settings.dry_run {
            self.report.counts_mut(kind).deleted += 1;
            return Ok(());
        }
        let item = ItemRef { kind, id };
        let options = Options {
            event_id: self.event_id,
            tombstone_ttl_seconds: self.settings.tombstone_ttl_seconds,
            guard: None,
        };
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
