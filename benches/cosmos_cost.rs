//! What one delivery costs on the Cosmos path: the router and the whole Cosmos SDK pipeline over
//! Microsoft's in-memory emulator (from the SDK's driver crate), in this process, for one round
//! of the workload in `support/cost.rs` (300 users created, updated, then deleted: 900 signed
//! deliveries, 8 in flight). Prints this process's CPU per delivery (the handler's code, the
//! SDK and the emulator's own work: no socket), deliveries per second and peak RSS.
//!
//! The emulator does the same work for either release, so two releases compare by building this
//! same file at each (`scripts/compare-delivery-cost` does, and runs them in turn). By hand:
//! `cargo bench --bench cosmos_cost -- [--label NAME]`. A warm-up round on its own users comes
//! first, so the SDK's first connection is not counted.

#[path = "support/app.rs"]
mod app;
#[path = "../tests/it/cosmos_emulator.rs"]
#[allow(dead_code)]
mod cosmos_emulator;
#[path = "support/cost.rs"]
mod cost;
#[allow(dead_code)]
#[path = "../tests/it/fixtures.rs"]
mod fixtures;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use cost::{Delivery, Figures, IN_FLIGHT};
use handler::store::Store;
use handler::verify::Verifier;
use tower::ServiceExt;

const TTL_SECONDS: u32 = 30 * 86_400;

fn main() {
    // Library backtraces off unless asked for, as on a Function App: with `RUST_BACKTRACE=1` (a
    // common development shell) the SDK captures a backtrace for every absent optional header,
    // which would cost more than the handler's own work (see benches/reconcile.rs).
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: first thing in `main`, before the runtime or any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let label = cost::argument("--label").unwrap_or_else(|| "cosmos".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let figures = runtime.block_on(async {
        let emulator = cosmos_emulator::Emulator::new();
        let store: Arc<dyn Store> = Arc::new(emulator.store().await);
        let verifier = Verifier::from_secrets(fixtures::SECRET).expect("a valid secret");
        let app = app::app(verifier, store, TTL_SECONDS);
        for phase in cost::phases("warmup") {
            run_phase(&app, phase).await;
        }
        let phases = cost::phases("r");
        let cpu_before = cost::process_cpu_ns(0);
        let started = Instant::now();
        let (mut not_ok, mut deliveries, mut phase_cpu_ns) = (0, 0, [0; 3]);
        for (phase, cpu) in phases.into_iter().zip(&mut phase_cpu_ns) {
            let before = cost::process_cpu_ns(0);
            deliveries += phase.len();
            not_ok += run_phase(&app, phase).await;
            *cpu = cost::process_cpu_ns(0) - before;
        }
        let wall_s = started.elapsed().as_secs_f64();
        Figures {
            deliveries,
            not_ok,
            wall_s,
            cpu_ns: cost::process_cpu_ns(0) - cpu_before,
            peak_rss_kib: cost::status_kib("self", "VmHWM"),
            rss_anon_kib: cost::status_kib("self", "RssAnon"),
            driver_cpu_ns: 0,
            phase_cpu_ns,
        }
    });
    figures.print(&label);
}

/// Every delivery of `phase` through the router, `IN_FLIGHT` at a time; returns how many were
/// answered other than 200.
async fn run_phase(app: &axum::Router, phase: Vec<Delivery>) -> usize {
    let phase = Arc::new(std::sync::Mutex::new(phase.into_iter()));
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (app, phase) = (app.clone(), Arc::clone(&phase));
            tokio::spawn(async move {
                let mut not_ok = 0;
                loop {
                    let Some(delivery) = phase.lock().unwrap().next() else {
                        return not_ok;
                    };
                    let request = Request::post("/api/ClerkWebhook")
                        .header("content-type", "application/json")
                        .header("svix-id", delivery.id)
                        .header("svix-timestamp", delivery.timestamp)
                        .header("svix-signature", delivery.signature)
                        .body(Body::from(delivery.body))
                        .expect("a request");
                    let response = app.clone().oneshot(request).await.expect("a response");
                    if response.status() != 200 {
                        not_ok += 1;
                    }
                    let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
                }
            })
        })
        .collect();
    let mut not_ok = 0;
    for worker in workers {
        not_ok += worker.await.expect("a worker");
    }
    not_ok
}
