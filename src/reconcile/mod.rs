//! Reconcile: makes the store equal Clerk. Sweeps every Clerk user, organization and membership,
//! compares each with the store by the same decision as webhooks, heals what differs, and
//! tombstones what Clerk no longer has — only after a complete sweep, and only once Clerk
//! confirms each is gone.
//!
//! Memory: a page of Clerk's items at a time (and the next one, fetched meanwhile), each page
//! classified against the states the store holds for its ids, read in one query; and, for the
//! deletion check, 8 bytes per live item stored when the run started (`listed`). After the
//! sweeps, the store's states are streamed past that set (`delete`).

mod delete;
mod listed;
mod progress;
mod report;

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::time::Instant;

use self::listed::Listed;
use crate::clerk::Snapshot;
use crate::clerk::api::{ClerkApi, ClerkApiError, Sweep};
use crate::store::{RequestCharge, Store};
use crate::sync::apply::{self, ApplyError, Options};
use crate::sync::decide::{
    self, Change, Confirmation, Facts, Outcome, Parents, SkipReason, Verdict,
};
use crate::sync::document::{Source, State};
use crate::sync::item::{ItemId, Kind};

pub use self::progress::{LogProgress, Phase, Progress};
pub use self::report::{Counts, Report, Run, Stopped, Trigger, plural};

/// Store writes in flight at once: enough to keep up with Clerk's pages, few enough not to
/// throttle a serverless account.
pub const WRITE_CONCURRENCY: usize = 16;

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
            tracing::warn!(
                event = "reconcile_forbidden",
                run_id,
                %kind,
                reason,
                "reconcile: Clerk forbids listing these; is the Organizations feature off? Counted as none"
            );
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
        listed: Listed::new(),
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

struct Reconcile<'a> {
    store: &'a dyn Store,
    clerk: &'a ClerkApi,
    settings: &'a Settings<'a>,
    source: Source<'a>,
    /// The run's id: its documents' `lastEventId`.
    event_id: &'a str,
    report: Report,
    /// The live items stored when the run started, and whether Clerk listed each.
    listed: Listed,
    request_charge: RequestCharge,
}

impl Reconcile<'_> {
    async fn run(&mut self) -> Result<(), Stopped> {
        self.index_store().await?;
        for kind in ORDER {
            self.sweep(kind).await?;
        }
        // Only now, after every sweep completed, may anything be deleted.
        self.delete_gone().await
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

    /// Counts the live items of each kind stored as the run starts (the report's `store`), and
    /// remembers them for the deletion check; nothing else of the store is kept.
    async fn index_store(&mut self) -> Result<(), Stopped> {
        let mut listed = Listed::new();
        let mut states = self.store.states();
        while let Some((id, state)) = self.in_time(states.try_next()).await? {
            if let State::Live {
                kind: Some(kind), ..
            } = state
            {
                self.report.counts_mut(kind).store += 1;
                listed.insert(&id);
            }
        }
        self.listed = listed.sealed();
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
            let planned = self.plan(kind, items).await?;
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

    /// One page's items, read and classified against the store's states of their ids (and of a
    /// membership's organization and user): what each needs, counted as Clerk's.
    async fn plan(
        &mut self,
        kind: Kind,
        page: Vec<Map<String, Value>>,
    ) -> Result<Vec<(Snapshot, Verdict)>, Stopped> {
        let snapshots: Vec<Snapshot> = page
            .into_iter()
            .filter_map(|data| match Snapshot::parse(kind, data) {
                Ok(snapshot) => Some(snapshot),
                Err(error) => {
                    // Never the payload: it may hold personal data.
                    tracing::warn!(
                        event = "reconcile_unreadable_item",
                        run_id = self.event_id,
                        %kind,
                        %error,
                        "reconcile: Clerk sent an item it cannot read; left as it is"
                    );
                    None
                }
            })
            .collect();
        self.report.counts_mut(kind).clerk += snapshots.len() as u64;
        let mut ids: Vec<ItemId> = snapshots
            .iter()
            .flat_map(|snapshot| {
                let parents = Change::Upsert(snapshot).parent_ids().into_iter().flatten();
                std::iter::once(snapshot.id()).chain(parents).cloned()
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let (states, charge) = self.in_time(self.store.states_of(&ids)).await?;
        self.request_charge += charge;
        let states: HashMap<String, State> = states.into_iter().collect();
        Ok(snapshots
            .into_iter()
            .map(|snapshot| {
                let verdict = self.classify(&snapshot, &states);
                (snapshot, verdict)
            })
            .collect())
    }

    /// What the decision says about one Clerk item against the store's `states`, marking it
    /// listed.
    fn classify(&mut self, snapshot: &Snapshot, states: &HashMap<String, State>) -> Verdict {
        let change = Change::Upsert(snapshot);
        let parents = Parents::of(
            change
                .parent_ids()
                .into_iter()
                .flatten()
                .map(|id| states.get(id.as_str()).copied()),
        );
        self.listed.mark(snapshot.id().as_str());
        let state = states.get(snapshot.id().as_str()).copied();
        let facts = Facts {
            parents,
            // The item comes from Clerk itself.
            clerk: Confirmation::NotNeeded,
        };
        decide::decide(state, change, facts).unwrap_or_else(|conflict| {
            tracing::warn!(
                event = "reconcile_kind_conflict",
                run_id = self.event_id,
                item_id = %snapshot.id(),
                %conflict,
                "reconcile: the id holds another kind of item; left as it is"
            );
            Verdict::Skip(SkipReason::Unchanged)
        })
    }

    /// Counts each verdict, and (unless a dry run) applies the writes, a few at a time. A write
    /// re-reads and re-decides, so a webhook that wrote a newer version meanwhile wins.
    async fn heal(&mut self, kind: Kind, planned: Vec<(Snapshot, Verdict)>) -> Result<(), Stopped> {
        let (store, dry_run, event_id) = (self.store, self.settings.dry_run, self.event_id);
        let options = self.apply_options();
        let results: Vec<Result<(Verdict, RequestCharge), ApplyError>> =
            futures::stream::iter(planned)
                .map(|(snapshot, verdict)| async move {
                    if dry_run || !matches!(verdict, Verdict::Create | Verdict::Update) {
                        return Ok((verdict, RequestCharge::default()));
                    }
                    let report = match apply::apply(store, Change::Upsert(&snapshot), options).await
                    {
                        Ok(report) => report,
                        // Something else took the id since it was read: left as it is,
                        // as `classify` leaves one it sees.
                        Err(ApplyError::Conflict(conflict)) => {
                            tracing::warn!(
                                event = "reconcile_kind_conflict",
                                run_id = event_id,
                                item_id = %snapshot.id(),
                                %conflict,
                                "reconcile: the id holds another kind of item; left as it is"
                            );
                            return Ok((
                                Verdict::Skip(SkipReason::Unchanged),
                                RequestCharge::default(),
                            ));
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
}
