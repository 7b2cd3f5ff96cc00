//! How a run tells what it has done so far: a trait the command line's progress bar implements,
//! and a log line every few seconds for the timer and for a command not on a terminal.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::report::{Counts, plural};
use crate::sync::item::Kind;

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
        tracing::info!(
            event = "reconcile_progress",
            kind = plural(kind),
            ?phase,
            clerk = counts.clerk,
            store = counts.store,
            created = counts.created,
            updated = counts.updated,
            deleted = counts.deleted,
            unchanged = counts.unchanged,
            newer_in_store = counts.newer_in_store,
        );
    }
}
