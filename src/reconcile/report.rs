//! What a reconcile run reports: counts per kind (the SPEC's JSON object), whether it completed
//! and why not, as a table's rows, the timer's log lines, and the `reconcile` event: one log line
//! whose counts are numbers a query can sum.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::Level;

use crate::clerk::api::ClerkApiError;
use crate::store::{RequestCharge, StoreError};
use crate::sync::apply::ApplyError;
use crate::sync::item::Kind;
use crate::telemetry::{Flatten, log_at};

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
    pub duration: Duration,
    /// Requests made to Clerk's Backend API, retries included.
    pub clerk_requests: u64,
}

/// What started a run, as its `reconcile` event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The `Reconcile` timer function.
    Timer,
    /// `handler reconcile`.
    Command,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Timer => "timer",
            Self::Command => "command",
        }
    }
}

impl Run {
    /// One line for the run, then one per kind, then the `reconcile` event's fields as one JSON
    /// object: the timer's invocation `Logs`, which the host records under the invocation.
    pub fn summary(&self, trigger: Trigger) -> Vec<String> {
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
        let mut event = Map::from_iter([("event".to_owned(), json!("reconcile"))]);
        event.extend(self.fields(trigger));
        lines.push(Value::Object(event).to_string());
        lines
    }

    /// The `reconcile` event: information when the store was in step, a warning when the run
    /// found drift (webhooks were missed), an error when it did not complete.
    pub fn log(&self, trigger: Trigger) {
        let level = match (&self.stopped, self.report.drift()) {
            (Some(_), _) => Level::ERROR,
            (None, 0) => Level::INFO,
            (None, _) => Level::WARN,
        };
        let fields = self.fields(trigger);
        log_at!(
            level,
            event = "reconcile",
            flatten = %Flatten(&fields),
            "reconcile finished"
        );
    }

    /// The event's fields: ids, flags and numbers, never names or emails; each kind's counts as
    /// `<kind>_<count>` (`users_created`, `memberships_newer_in_store`, ...).
    fn fields(&self, trigger: Trigger) -> Map<String, Value> {
        let mut fields = Map::from_iter([
            ("run_id".to_owned(), json!(self.id)),
            ("trigger".to_owned(), json!(trigger.as_str())),
            ("dry_run".to_owned(), json!(self.report.dry_run)),
            ("complete".to_owned(), json!(self.report.complete)),
            (
                "stopped".to_owned(),
                json!(self.stopped.as_ref().map(ToString::to_string)),
            ),
            (
                "duration_ms".to_owned(),
                json!(self.duration.as_secs_f64() * 1000.0),
            ),
            ("drift".to_owned(), json!(self.report.drift())),
            ("request_charge".to_owned(), json!(self.request_charge.0)),
            ("clerk_requests".to_owned(), json!(self.clerk_requests)),
        ]);
        for kind in Kind::ALL {
            let counts = serde_json::to_value(self.report.counts(kind));
            let Ok(Value::Object(counts)) = counts else {
                unreachable!("Counts serializes to an object")
            };
            for (count, value) in counts {
                fields.insert(format!("{}_{}", plural(kind), snake_case(&count)), value);
            }
        }
        fields
    }
}

/// `newerInStore` as `newer_in_store`: the report's JSON names as log field names.
fn snake_case(camel: &str) -> String {
    let mut snake = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}

/// How a kind is named in reports: the report's own field names.
pub fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "users",
        Kind::Organization => "organizations",
        Kind::Membership => "memberships",
    }
}
