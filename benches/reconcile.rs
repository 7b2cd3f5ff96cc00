//! Reconcile of a large tenant from the Clerk Backend API double: a backfill into an empty store,
//! then a dry run over the store now in sync, on the embedded store (the release binary,
//! `handler reconcile --json`, as a child process) and on the SDK's in-memory Cosmos emulator
//! (`handler::reconcile::reconcile` in this process: the emulator only exists in-process).
//!
//! `cargo bench --bench reconcile`: 100 000 users on the embedded store, 20 000 on the emulator
//! (`RECONCILE_BENCH_USERS` and `RECONCILE_BENCH_EMULATOR_USERS` change them, `0` skips the
//! emulator; see `DEFAULT_EMULATOR_USERS` for why the emulator gets fewer). Wall time, users per
//! second, Clerk requests, request units (emulator estimate) and peak memory; the counts of every
//! run are checked. A first row times the users sweep alone, with no store: the double's share of
//! every run below. For the embedded runs, the CPU time the double (this process) spent while the
//! handler ran is printed beside the handler's own, so that a run limited by the double shows.
//!
//! A million users: `RECONCILE_BENCH_USERS=1000000 RECONCILE_BENCH_EMULATOR_USERS=0 cargo bench
//! --bench reconcile` (about 25 minutes on two cores, most of it the backfill's fsynced writes).
//!
//! The double answers as fast as it can and the client is allowed 1 000 requests/s, so these runs
//! measure the handler (and the double), not Clerk: Clerk allows 100 requests/s per key in
//! production and `CLERK_API_RATE` defaults to 10, so a real sweep of 100 000 users (200 pages of
//! 500) takes at least 20 s at the default rate.
//!
//! The embedded store's peak memory is the handler's own: its `VmHWM`, polled while it runs
//! (`wait4`'s `ru_maxrss` is printed too, but it includes this process's peak; see `Waited`).
//! The emulator's is this process's `VmHWM`, which also holds the double's and the emulator's
//! copies of every user: it is reset just before the run, and the resident size then is shown.

#[path = "../tests/it/clerk_api_double.rs"]
#[allow(
    dead_code,
    reason = "shared with the tests; the benchmark needs only part of it"
)]
mod clerk_api_double;

#[path = "../tests/it/cosmos_emulator.rs"]
#[allow(
    dead_code,
    reason = "shared with the tests; the benchmark needs only part of it"
)]
mod cosmos_emulator;

// Shared with the integration tests; each benchmark uses part of it.
#[allow(dead_code)]
#[path = "../tests/it/fixtures.rs"]
mod fixtures;
#[path = "../tests/it/loopback.rs"]
mod loopback;

use std::fs::File;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clerk_api_double::ClerkApiDouble;
use cosmos_emulator::Emulator;
use fixtures::clerk_user;
use handler::clerk::api::ClerkApi;
use handler::reconcile::{self, Counts, Phase, Progress, Report, Settings, plural};
use handler::sync::item::Kind;
use serde_json::{Value, json};
use tempfile::TempDir;

const KEY: &str = "sk_test_cmVjb25jaWxlIGJlbmNobWFyayBrZXk";
const DEFAULT_USERS: usize = 100_000;
/// The emulator counts every document of the partition on each point read and write
/// (`PointResponseHeaders::from_partition`), so its runs grow faster than linearly with the
/// users: 20 000 took 7 s on two cores, 100 000 two and a half minutes.
/// `RECONCILE_BENCH_EMULATOR_USERS` sets more.
const DEFAULT_EMULATOR_USERS: usize = 20_000;
/// Users created in the same millisecond: bulk imports do that, and 500 is not a multiple of 7,
/// so ties straddle page boundaries.
const TIE: usize = 7;
const T0: i64 = 1_700_000_000_000;
/// High enough never to wait on the pacer: the double is the limit, not a rate.
const RATE: f64 = 1_000.0;
const TTL_SECONDS: u32 = 30 * 86_400;
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the child's peak resident size is read.
const RSS_POLL: Duration = Duration::from_millis(5);
/// `handler reconcile`'s exit status when done (or, in a dry run, nothing to do).
const EXIT_IN_SYNC: i32 = 0;

fn main() {
    // Library backtraces off unless asked for, as on a Function App: with `RUST_BACKTRACE=1`
    // (common in a development shell) the SDK captures a backtrace for every absent optional
    // header (`typespec::http::headers::Headers::get_optional_str` builds an error), which costs
    // the in-process emulator runs more than the handler's own work does.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: first thing in `main`, before the runtime or any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let users = count("RECONCILE_BENCH_USERS", DEFAULT_USERS);
    let emulator_users = count("RECONCILE_BENCH_EMULATOR_USERS", DEFAULT_EMULATOR_USERS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        // The emulator first: its peak is this process's, best measured before the large
        // double's memory, freed or not, is part of it.
        let mut emulated_rows = Vec::new();
        if emulator_users > 0 {
            let double = tenant_double(emulator_users).await;
            let emulator = Emulator::new();
            emulated_rows.push(emulated(&double, &emulator, emulator_users, false).await);
            emulated_rows.push(emulated(&double, &emulator, emulator_users, true).await);
        }
        let double = tenant_double(users).await;
        let mut rows = vec![sweep_only(&double, users).await];
        let dir = TempDir::new().expect("a temporary directory");
        let path = dir.path().join("reconcile.sqlite3");
        rows.push(embedded(&double, &path, users, false));
        rows.push(embedded(&double, &path, users, true));
        rows.extend(emulated_rows);
        print_table(users, emulator_users, &rows);
    });
}

/// A count from the environment, else `default`.
fn count(variable: &str, default: usize) -> usize {
    std::env::var(variable).map_or(default, |n| {
        n.parse()
            .unwrap_or_else(|_| panic!("{variable} is a number of users, not {n:?}"))
    })
}

/// A double holding a tenant of `users` users.
async fn tenant_double(users: usize) -> ClerkApiDouble {
    let double = ClerkApiDouble::start(KEY).await;
    let built = Instant::now();
    double.put_all(tenant(users));
    eprintln!(
        "reconcile bench: {users} users in the double in {:.1} s; bench RSS {} MiB",
        built.elapsed().as_secs_f64(),
        mib(proc_status("VmRSS"))
    );
    double
}

/// `n` real-shaped users with distinct ids. Creation times come in groups of `TIE` sharing a
/// millisecond, with uneven gaps between groups. The ids sort in creation order, as Clerk's
/// (time-ordered) ids do.
fn tenant(n: usize) -> impl Iterator<Item = Value> {
    (0..n).map(|i| {
        let group = (i / TIE) as i64;
        // Strictly increasing: the varying part (at most 120) is below the 150 step.
        let created_at = T0 + group * 150 + (group % 11) * (group % 13);
        let mut user = clerk_user(
            &format!("user_2bench{i:07}"),
            created_at + 1 + (i % 997) as i64,
        );
        user["created_at"] = json!(created_at);
        user
    })
}

/// One line of the results.
struct Row {
    run: &'static str,
    store: &'static str,
    wall: Duration,
    users: usize,
    clerk_requests: usize,
    /// Request units per 1 000 users, for the emulator only.
    ru_per_1000: Option<f64>,
    /// KiB.
    peak_rss: u64,
    /// KiB, for the in-process runs: resident just before the run.
    rss_before: Option<u64>,
    /// CPU seconds of the handler process and of this one (the double) during an embedded run.
    cpu: Option<(f64, f64)>,
    result: String,
}

/// The double and the client alone, no store: what the double costs in every run below.
async fn sweep_only(double: &ClerkApiDouble, users: usize) -> Row {
    let clerk = ClerkApi::new(&double.settings(KEY, RATE)).expect("a Clerk client");
    let requests = double.request_count();
    let rss_before = reset_peak_rss();
    let started = Instant::now();
    let mut sweep = clerk.users();
    let mut swept = 0;
    while let Some(page) = sweep.next_page().await.expect("the double answers") {
        swept += page.len();
    }
    let wall = started.elapsed();
    assert_eq!(swept, users, "the sweep saw every user once");
    Row {
        run: "users sweep alone (no store)",
        store: "-",
        wall,
        users,
        clerk_requests: double.request_count() - requests,
        ru_per_1000: None,
        peak_rss: proc_status("VmHWM"),
        rss_before: Some(rss_before),
        cpu: None,
        result: format!("{swept} users listed"),
    }
}

/// `handler reconcile --json [--dry-run]`, the release binary on the embedded store at `path`.
fn embedded(double: &ClerkApiDouble, path: &std::path::Path, users: usize, dry_run: bool) -> Row {
    let stderr_path = path.with_extension(if dry_run { "dry.log" } else { "log" });
    let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
    command
        .arg("reconcile")
        .arg("--json")
        .args(dry_run.then_some("--dry-run"))
        .env_clear()
        .env("CLERK_SECRET_KEY", KEY)
        .env("CLERK_API_URL", double.url())
        .env("CLERK_API_RATE", RATE.to_string())
        .env("LOCAL_STORE_PATH", path)
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&stderr_path).expect("a log file"));
    let requests = double.request_count();
    eprintln!(
        "reconcile bench: handler reconcile{} on the embedded store...",
        if dry_run { " --dry-run" } else { "" }
    );
    let started = Instant::now();
    let double_cpu = own_cpu_seconds();
    let waited = wait_with_rusage(command.spawn().expect("the handler binary starts"));
    let wall = started.elapsed();
    let double_cpu = own_cpu_seconds() - double_cpu;
    let clerk_requests = double.request_count() - requests;
    eprintln!(
        "  exit {:?} after {:.1} s; handler VmHWM {} MiB (wait4 ru_maxrss {} MiB, this process's \
         peak included); CPU: handler {:.1} s, double {:.1} s; this process resident {} MiB",
        waited.exit_code,
        wall.as_secs_f64(),
        mib(waited.peak_rss_kib),
        mib(waited.ru_maxrss_kib),
        waited.cpu_seconds,
        double_cpu,
        mib(proc_status("VmRSS"))
    );
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert_eq!(
        waited.exit_code,
        Some(EXIT_IN_SYNC),
        "handler reconcile exited {:?}; stdout {}; stderr:\n{}",
        waited.exit_code,
        waited.stdout,
        log()
    );
    let report: Value = serde_json::from_str(waited.stdout.trim()).unwrap_or_else(|e| {
        panic!("--json prints one object ({e}): {}", waited.stdout);
    });
    let expected = expected(users, dry_run);
    assert_eq!(report["dryRun"], dry_run);
    assert_eq!(report["complete"], true);
    assert_eq!(
        serde_json::to_value(expected).unwrap(),
        report["users"],
        "users counts"
    );
    Row {
        run: if dry_run {
            "dry run, in sync"
        } else {
            "backfill, empty store"
        },
        store: "embedded (CLI)",
        wall,
        users,
        clerk_requests,
        ru_per_1000: None,
        peak_rss: waited.peak_rss_kib,
        rss_before: None,
        cpu: Some((waited.cpu_seconds, double_cpu)),
        result: format!(
            "exit {}, {}",
            waited.exit_code.unwrap_or(-1),
            summary(&report["users"])
        ),
    }
}

/// `handler::reconcile::reconcile` in this process, over a `CosmosStore` on the emulator.
async fn emulated(
    double: &ClerkApiDouble,
    emulator: &Emulator,
    users: usize,
    dry_run: bool,
) -> Row {
    let store = emulator.store().await;
    let clerk = ClerkApi::new(&double.settings(KEY, RATE)).expect("a Clerk client");
    let requests = double.request_count();
    eprintln!(
        "reconcile bench: reconcile{} on the Cosmos emulator...",
        if dry_run { " (dry run)" } else { "" }
    );
    let rss_before = reset_peak_rss();
    let progress = EveryFewSeconds::default();
    let started = Instant::now();
    let run = reconcile::reconcile(
        &store,
        &clerk,
        Settings {
            dry_run,
            tombstone_ttl_seconds: TTL_SECONDS,
            deadline: None,
            progress: &progress,
        },
    )
    .await;
    let wall = started.elapsed();
    let peak_rss = proc_status("VmHWM");
    if let Some(stopped) = &run.stopped {
        panic!("the emulator run stopped: {stopped}");
    }
    check(&run.report, users, dry_run);
    let clerk_requests = double.request_count() - requests;
    assert_eq!(clerk.requests_made(), clerk_requests as u64);
    let users_json = serde_json::to_value(run.report.users).expect("counts as JSON");
    Row {
        run: if dry_run {
            "dry run, in sync"
        } else {
            "backfill, empty store"
        },
        store: "Cosmos emulator (in-process)",
        wall,
        users,
        clerk_requests,
        ru_per_1000: Some(run.request_charge.0 * 1_000.0 / users as f64),
        peak_rss,
        rss_before: Some(rss_before),
        cpu: None,
        result: format!("complete, {}", summary(&users_json)),
    }
}

/// What the users' counts must be: every user created, or, once in sync, every one unchanged.
fn expected(users: usize, dry_run: bool) -> Counts {
    let n = users as u64;
    if dry_run {
        Counts {
            clerk: n,
            store: n,
            unchanged: n,
            ..Counts::default()
        }
    } else {
        Counts {
            clerk: n,
            created: n,
            ..Counts::default()
        }
    }
}

fn check(report: &Report, users: usize, dry_run: bool) {
    assert_eq!(report.dry_run, dry_run);
    assert!(report.complete);
    assert_eq!(report.users, expected(users, dry_run), "users counts");
    assert_eq!(report.organizations, Counts::default());
    assert_eq!(report.memberships, Counts::default());
}

/// The counts that are not zero, as `created 100000`.
fn summary(counts: &Value) -> String {
    let shown: Vec<String> = ["created", "updated", "deleted", "unchanged", "newerInStore"]
        .iter()
        .filter_map(|name| {
            let n = counts[name].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{name} {n}"))
        })
        .collect();
    if shown.is_empty() {
        "nothing".to_owned()
    } else {
        shown.join(", ")
    }
}

/// A line on stderr every few seconds, so that a slow run shows it is moving.
struct EveryFewSeconds {
    started: Instant,
    last: Mutex<Instant>,
}

impl Default for EveryFewSeconds {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Progress for EveryFewSeconds {
    fn update(&self, kind: Kind, counts: &Counts, _: Phase) {
        let mut last = self.last.lock().unwrap();
        if last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            eprintln!(
                "  {:>5.0} s: {} {} swept",
                self.started.elapsed().as_secs_f64(),
                counts.clerk,
                plural(kind)
            );
        }
    }
}

/// A child's output, exit and peak resident memory.
struct Waited {
    stdout: String,
    exit_code: Option<i32>,
    /// The child's own peak, KiB: its `VmHWM`, polled until it exits.
    peak_rss_kib: u64,
    /// `wait4`'s `ru_maxrss`, KiB. Not the child's own: `Command` spawns with `CLONE_VFORK`, so
    /// the exec replaces this process's address space and Linux carries its peak into the
    /// child's `maxrss` (the double's users and all).
    ru_maxrss_kib: u64,
    /// The child's user and system CPU time.
    cpu_seconds: f64,
}

/// Reads the child's stdout to its end, then reaps it with `wait4` for its exit status and
/// `ru_maxrss`. Meanwhile a thread reads its `/proc/<pid>/status` `VmHWM` every few milliseconds:
/// the peak of its own address space, which only grows, so the last reading is the peak up to a
/// few milliseconds before exit.
fn wait_with_rusage(mut child: std::process::Child) -> Waited {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let done = Arc::clone(&done);
        let status = format!("/proc/{pid}/status");
        std::thread::spawn(move || {
            let mut peak = 0;
            // A zombie's status has no VmHWM any more: that ends it too.
            while !done.load(Ordering::Relaxed) {
                match status_field(&status, "VmHWM") {
                    Some(hwm) => peak = peak.max(hwm),
                    None if peak > 0 => break,
                    None => {}
                }
                std::thread::sleep(RSS_POLL);
            }
            peak
        })
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut stdout)
        .expect("the child's stdout");
    let mut status = 0;
    // SAFETY: `rusage` is plain data, all zeroes is a valid value, and `wait4` fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (`Child::wait` is never called), and
    // both out-pointers are valid for writes.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    done.store(true, Ordering::Relaxed);
    let exit_code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Waited {
        stdout,
        exit_code,
        peak_rss_kib: poller.join().expect("the RSS poller"),
        // Linux reports kilobytes.
        ru_maxrss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    }
}

fn seconds(time: libc::timeval) -> f64 {
    time.tv_sec as f64 + time.tv_usec as f64 / 1e6
}

/// This process's user and system CPU time so far: the double's, while the handler runs.
fn own_cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain data, all zeroes is a valid value, and `getrusage` fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer for this process's own usage.
    let done = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(done, 0, "getrusage: {}", std::io::Error::last_os_error());
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// A field of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
fn proc_status(field: &str) -> u64 {
    status_field("/proc/self/status", field)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// A KiB field of a `/proc/<pid>/status` file; `None` once the process (or its memory) is gone.
fn status_field(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets this process's peak resident size to its current one (Linux's `clear_refs` 5), so that
/// `VmHWM` afterwards is the peak of what follows; returns the resident size now, in KiB.
fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("/proc/self/clear_refs resets VmHWM");
    proc_status("VmRSS")
}

fn mib(kib: u64) -> u64 {
    kib / 1024
}

fn print_table(users: usize, emulator_users: usize, rows: &[Row]) {
    println!();
    println!(
        "reconcile: {users} users (embedded store), {emulator_users} (emulator), created_at ties \
         in groups of {TIE}, from the Clerk API double at up to {RATE} requests/s"
    );
    println!(
        "| run | store | wall s | users/s | Clerk requests | RU / 1 000 users | peak RSS MiB | CPU s handler / double | result |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let rss = match row.rss_before {
            Some(before) => format!(
                "{} (from {}, +{})",
                mib(row.peak_rss),
                mib(before),
                mib(row.peak_rss.saturating_sub(before))
            ),
            None => mib(row.peak_rss).to_string(),
        };
        let cpu = row.cpu.map_or("-".to_owned(), |(handler, double)| {
            format!("{handler:.1} / {double:.1}")
        });
        println!(
            "| {} | {} | {:.1} | {:.0} | {} | {} | {} | {cpu} | {} |",
            row.run,
            row.store,
            row.wall.as_secs_f64(),
            row.users as f64 / row.wall.as_secs_f64(),
            row.clerk_requests,
            row.ru_per_1000
                .map_or("-".to_owned(), |ru| format!("{ru:.0}")),
            rss,
            row.result
        );
    }
    println!();
    println!(
        "embedded: the release binary as a child process; peak RSS is its own VmHWM (polled \
         from /proc/<pid>/status: wait4's ru_maxrss would include this process's peak, see \
         `Waited`); the wall time includes its start and the store scan."
    );
    if emulator_users > 0 {
        println!(
            "emulator: in this process; peak RSS is this process's VmHWM, reset just before the run \
         (from = resident then, which already holds the double's {emulator_users} users), so it \
         also counts the emulator's own copy of every document written; RU is the emulator's \
         estimate of the runs' per-page state queries, reads and writes, the two scans of the \
         store's states not included. The emulator counts its whole partition on every point \
         operation, and evaluates a query against every document, so its time grows faster than \
         linearly; a real account does not."
        );
    }
    println!(
        "Clerk: real Clerk allows 100 requests/s per key and CLERK_API_RATE defaults to 10, so a \
         real run is paced by Clerk: {users} users = {} pages of 500, at least {:.0} s at 10 \
         requests/s.",
        users.div_ceil(500),
        users.div_ceil(500) as f64 / 10.0
    );
}
