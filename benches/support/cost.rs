//! The delivery-cost workload shared by `delivery_cost` (the built binary, over loopback) and
//! `cosmos_cost` (the router over the Cosmos emulator, in-process): the same user events, signed
//! the same way, sent the same number at a time, and the CPU clocks they are measured with.
//!
//! User events only, so that a binary from before organizations existed runs the same workload.

use std::time::{SystemTime, UNIX_EPOCH};

use svix::webhooks::Webhook;

use crate::fixtures::{SECRET, user_changed, user_deleted};

/// Users in a round: each is created, then updated, then deleted, one phase after another.
pub const USERS: usize = 300;
/// Deliveries in flight at once.
pub const IN_FLIGHT: usize = 8;
pub const T0: i64 = 1_700_000_000_000;

/// A signed delivery: the `svix-*` headers and the exact body.
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
}

/// The round's three phases, `USERS` deliveries each: creates, updates, deletes. Signed now (the
/// handler refuses a timestamp more than 5 minutes off), before any clock is read.
pub fn phases(round: &str) -> [Vec<Delivery>; 3] {
    let signer = Webhook::new(SECRET).expect("a valid secret");
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64;
    let phase = |name: &str, event: &dyn Fn(&str) -> serde_json::Value| {
        (0..USERS)
            .map(|n| {
                let id = format!("msg_{round}_{name}_{n}");
                let body = serde_json::to_vec(&event(&format!("user_{round}_{n}"))).expect("JSON");
                let signature = signer
                    .sign(&id, timestamp, &body)
                    .expect("a UTF-8 body signs");
                Delivery {
                    id,
                    timestamp: timestamp.to_string(),
                    signature,
                    body,
                }
            })
            .collect()
    };
    [
        phase("create", &|user| user_changed("user.created", user, T0 + 1)),
        phase("update", &|user| user_changed("user.updated", user, T0 + 2)),
        phase("delete", &|user| user_deleted(user)),
    ]
}

/// CPU time (user + system, every thread, finished ones included) of process `pid` so far, in
/// nanoseconds, from its CPU-time clock; `0` is this process.
pub fn process_cpu_ns(pid: i32) -> u64 {
    let mut clock: libc::clockid_t = libc::CLOCK_PROCESS_CPUTIME_ID;
    if pid != 0 {
        // SAFETY: `clock` is a valid place for the clock id.
        let found = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
        assert_eq!(found, 0, "no CPU clock for process {pid}");
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    let read = unsafe { libc::clock_gettime(clock, &mut now) };
    assert_eq!(read, 0, "cannot read the CPU clock of process {pid}");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// A `kB` line of `/proc/<pid>/status` (`pid` may be `self`), in KiB: `VmHWM` (the peak
/// resident set), `RssAnon` (its heap and stacks now), ...
pub fn status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("a {field} line"))
}

/// One round's figures, printed as one line that `scripts/compare-delivery-cost` reads.
pub struct Figures {
    pub deliveries: usize,
    pub not_ok: usize,
    pub wall_s: f64,
    pub cpu_ns: u64,
    pub peak_rss_kib: u64,
    /// The anonymous part of the resident set at the end (heap, stacks): unlike the part
    /// mapped from the binary, it does not depend on how much of the file the page cache holds.
    pub rss_anon_kib: u64,
    /// The load generator's own CPU over the same time, so that it can be seen not to be the
    /// bottleneck (in-process: the signing is done before the clock starts; this is zero).
    pub driver_cpu_ns: u64,
    /// The handler's CPU in each phase: creates, updates, deletes.
    pub phase_cpu_ns: [u64; 3],
}

impl Figures {
    pub fn print(&self, label: &str) {
        let per = |ns: u64| ns as f64 / 1000.0 / self.deliveries as f64;
        let per_phase = |ns: u64| ns as f64 / 1000.0 / USERS as f64;
        println!(
            "RESULT label={label} deliveries={} not_ok={} cpu_us_per_delivery={:.1} \
             deliveries_per_s={:.0} peak_rss_mib={:.1} rss_anon_mib={:.1} driver_cpu_us_per_delivery={:.1} wall_s={:.3} \
             create_cpu_us={:.1} update_cpu_us={:.1} delete_cpu_us={:.1}",
            self.deliveries,
            self.not_ok,
            per(self.cpu_ns),
            self.deliveries as f64 / self.wall_s,
            self.peak_rss_kib as f64 / 1024.0,
            self.rss_anon_kib as f64 / 1024.0,
            per(self.driver_cpu_ns),
            self.wall_s,
            per_phase(self.phase_cpu_ns[0]),
            per_phase(self.phase_cpu_ns[1]),
            per_phase(self.phase_cpu_ns[2]),
        );
    }
}

/// `--name value` from this process's arguments.
pub fn argument(name: &str) -> Option<String> {
    let mut arguments = std::env::args().skip_while(|a| a != name);
    arguments.next()?;
    arguments.next()
}
