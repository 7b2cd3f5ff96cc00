//! What a reconcile run reports: counts per kind (the SPEC's JSON object), whether it completed
//! and why not, as a table's rows, the timer's log lines, and one log line of counts.

use std::fmt;

use serde::Serialize;

use crate::clerk::api::ClerkApiError;
use crate::store::{RequestCharge, StoreError};
use crate::sync::apply::ApplyError;
use crate::sync::item::Kind;

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

    pub(super) fn counts_mut(&mut self, kind: Kind) -> &mut Counts {
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
    /// What its reads of each page's states and its writes (reads and writes of `apply`) cost,
    /// in Cosmos request units; the two scans of every item's state are not included.
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
            Kind::ALL
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
