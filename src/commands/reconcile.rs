//! `handler reconcile [--dry-run] [--json]`: a reconcile with a progress bar on a terminal (a log
//! line every few seconds otherwise), its report as a table or one JSON object, and an exit
//! status that says what it found.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::clerk::api::ClerkApi;
use crate::reconcile::{
    self, Counts, LogProgress, Phase, Progress, Run, Settings, Trigger, plural,
};
use crate::store::Store;
use crate::sync::item::Kind;

/// What a run found, as the exit status tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Done; or, in a dry run, nothing to do.
    InSync,
    /// A dry run found drift.
    Drift,
    /// Clerk or the store failed, or time ran out: the report says how far it got.
    Incomplete,
}

pub async fn run(
    store: &dyn Store,
    clerk: &ClerkApi,
    tombstone_ttl_seconds: u32,
    dry_run: bool,
    json: bool,
    out: &mut impl Write,
) -> std::io::Result<Finished> {
    let bar;
    let log;
    let progress: &dyn Progress = if std::io::stderr().is_terminal() {
        bar = Bar::new();
        &bar
    } else {
        log = LogProgress::default();
        &log
    };
    let run = reconcile::reconcile(
        store,
        clerk,
        Settings {
            dry_run,
            tombstone_ttl_seconds,
            deadline: None,
            progress,
        },
    )
    .await;
    run.log(Trigger::Command);
    if json {
        serde_json::to_writer(&mut *out, &run.report)?;
        writeln!(out)?;
    } else {
        write_table(&run, out)?;
    }
    out.flush()?;
    Ok(match (&run.stopped, dry_run && run.report.drift() > 0) {
        (Some(_), _) => Finished::Incomplete,
        (None, true) => Finished::Drift,
        (None, false) => Finished::InSync,
    })
}

fn write_table(run: &Run, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>15}",
        "", "clerk", "store", "created", "updated", "deleted", "unchanged", "newer in store"
    )?;
    for kind in Kind::ALL {
        let c = run.report.counts(kind);
        writeln!(
            out,
            "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>15}",
            plural(kind),
            c.clerk,
            c.store,
            c.created,
            c.updated,
            c.deleted,
            c.unchanged,
            c.newer_in_store
        )?;
    }
    let first = run
        .summary(Trigger::Command)
        .into_iter()
        .next()
        .unwrap_or_default();
    writeln!(out, "{first}")?;
    if run.report.dry_run {
        writeln!(
            out,
            "dry run: nothing was written; created, updated and deleted say what would be done"
        )?;
    }
    Ok(())
}

/// A progress bar on stderr with rate and ETA. Clerk's user list has no total, so the length is
/// the store's count of that kind (exact once the store is in sync) or, for an empty store, a
/// spinner.
struct Bar {
    bar: ProgressBar,
}

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }
}

impl Progress for Bar {
    fn update(&self, kind: Kind, counts: &Counts, phase: Phase) {
        let estimate = counts.store.max(counts.clerk);
        let template = match (phase, counts.store) {
            (Phase::ConfirmingDeletions, _) => "{prefix:>14} confirming deletions {msg}",
            (_, 0) => "{spinner} {prefix:>14} {pos} swept ({per_sec}) {elapsed}",
            _ => "{prefix:>14} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_prefix(plural(kind));
        self.bar.set_length(estimate);
        self.bar.set_position(counts.clerk);
        self.bar.set_message(format!("{} deleted", counts.deleted));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
