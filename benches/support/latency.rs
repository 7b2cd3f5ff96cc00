//! What the HTTP benchmarks print about a load run: its rate and its latency percentiles.

use std::time::Duration;

/// Prints `<what> per second`, p50 and p99 of `sorted` latencies over `elapsed`.
pub fn print_rate_and_latency(what: &str, sorted: &[Duration], elapsed: Duration) {
    println!(
        "{:<44} {:>10.0}",
        format!("{what} per second"),
        sorted.len() as f64 / elapsed.as_secs_f64()
    );
    for p in [50, 99] {
        println!(
            "{:<44} {:>7.2} ms",
            format!("latency p{p}"),
            percentile(sorted, p).as_secs_f64() * 1000.0
        );
    }
}

/// `sorted` must be sorted.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}
