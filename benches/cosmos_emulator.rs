//! Deliveries per second and their latency (p50, p99) through the router over the Cosmos store
//! on the SDK's in-memory emulator, and the round trips and request units each event type costs.
//!
//! `cargo bench --bench cosmos_emulator`. The emulator answers in microseconds, so the numbers
//! measure the handler and the SDK pipeline (signing, routing, retries, diagnostics), not a
//! network; its request-unit model follows Cosmos DB's (1 RU per KiB read, about 5.8 per write
//! plus indexing), so the RU table is an estimate of a real account's charges.

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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fixtures::{
    SECRET, clerk_event, clerk_membership, clerk_organization, user_changed, user_deleted,
};
use handler::clerk::ClerkEvent;
use handler::http::{AppState, WEBHOOK_PATH, router};
use handler::store::Store;
use handler::sync::apply::{self, Options};
use handler::sync::decide::Change;
use handler::sync::document::Source;
use handler::verify::Verifier;
use serde_json::Value;
use tower::ServiceExt;

use cosmos_emulator::Emulator;

const TTL_SECONDS: u32 = 30 * 86_400;
const DELIVERIES: usize = 2_000;
const CONCURRENCY: usize = 16;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        charges_per_event_type().await;
        throughput().await;
    });
}

fn changed(id: &str, updated_at: i64) -> Value {
    user_changed("user.updated", id, updated_at)
}

/// Round trips and request units of one delivery of each kind, applied to the store directly.
async fn charges_per_event_type() {
    let emulator = Emulator::new();
    let store = emulator.store().await;
    let cases = [
        ("new user", changed("user_ru", 1)),
        ("update", changed("user_ru", 2)),
        ("duplicate", changed("user_ru", 2)),
        ("stale", changed("user_ru", 1)),
        ("delete", user_deleted("user_ru")),
        ("event after delete", changed("user_ru", 3)),
        ("delete of an unknown user", user_deleted("user_unknown")),
        (
            "new organization",
            clerk_event("organization.created", clerk_organization("org_ru", 1)),
        ),
        (
            "new membership",
            clerk_event(
                "organizationMembership.created",
                clerk_membership("orgmem_ru1", "org_ru", "user_ru2", 1),
            ),
        ),
        (
            "membership update",
            clerk_event(
                "organizationMembership.updated",
                clerk_membership("orgmem_ru1", "org_ru", "user_ru2", 2),
            ),
        ),
        (
            "second membership",
            clerk_event(
                "organizationMembership.created",
                clerk_membership("orgmem_ru2", "org_ru", "user_ru3", 1),
            ),
        ),
        (
            "org delete, 2 memberships",
            clerk_event(
                "organization.deleted",
                serde_json::json!({"id": "org_ru", "deleted": true}),
            ),
        ),
    ];
    println!(
        "\n{:<28} {:>11} {:>8} {:>9}",
        "event", "round trips", "RU", "cascaded"
    );
    for (n, (name, event)) in cases.iter().enumerate() {
        let (_, parsed) = ClerkEvent::parse(event.to_string().as_bytes()).expect("an event");
        let change = Change::from_event(&parsed).expect("a handled event");
        let options = Options {
            source: Source::Webhook(&format!("msg_ru{n}")),
            tombstone_ttl_seconds: TTL_SECONDS,
            guard: None,
        };
        let report = apply::apply(&store, change, options)
            .await
            .expect("applied");
        println!(
            "{name:<28} {:>11} {:>8.2} {:>9}",
            report.tally.round_trips, report.tally.request_charge.0, report.cascaded
        );
    }
}

/// A named workload: its name, and the event its delivery `n` carries.
type Workload = (&'static str, fn(usize) -> Value);

/// Deliveries through the router, `CONCURRENCY` at a time.
async fn throughput() {
    let emulator = Emulator::new();
    let store: Arc<dyn Store> = Arc::new(emulator.store().await);
    let app = router(Arc::new(AppState::new(
        Verifier::from_secrets(SECRET).expect("a valid secret"),
        store,
        TTL_SECONDS,
        None,
    )));
    println!(
        "\n{:<22} {:>10} {:>13} {:>9} {:>9} {:>9}",
        "workload", "deliveries", "deliveries/s", "p50 ms", "p99 ms", "max ms"
    );
    let workloads: [Workload; 4] = [
        ("new users", |n| changed(&format!("user_new{n}"), 1)),
        ("updates", |n| changed(&returning_user(n), 10 + n as i64)),
        ("duplicates (skipped)", |n| changed(&returning_user(n), 1)),
        ("same user, contended", |n| {
            changed("user_hot", 1_000_000 + n as i64)
        }),
    ];
    for (name, event) in workloads {
        let events: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..DELIVERIES)
                .map(|n| serde_json::to_vec(&event(n)).expect("JSON"))
                .collect(),
        );
        run(name, &app, events).await;
    }
}

/// The updates and duplicates go to 500 users, each seen several times.
fn returning_user(n: usize) -> String {
    format!("user_bench{}", n % 500)
}

async fn run(name: &'static str, app: &axum::Router, events: Arc<Vec<Vec<u8>>>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let (app, events, next) = (app.clone(), Arc::clone(&events), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = events.get(n) else {
                        return latencies;
                    };
                    let request = signed(&format!("msg_{worker}_{n}"), body.clone());
                    let sent = Instant::now();
                    let response = app.clone().oneshot(request).await.expect("a response");
                    latencies.push(sent.elapsed());
                    assert_eq!(response.status(), StatusCode::OK, "{name} delivery {n}");
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("a worker"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1_000.0
    };
    println!(
        "{name:<22} {:>10} {:>13.0} {:>9.2} {:>9.2} {:>9.2}",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(0.50),
        percentile(0.99),
        percentile(1.0),
    );
}

fn signed(msg_id: &str, body: Vec<u8>) -> Request<Body> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let signature = svix::webhooks::Webhook::new(SECRET)
        .expect("a valid secret")
        .sign(msg_id, timestamp, &body)
        .expect("a signature");
    Request::post(WEBHOOK_PATH)
        .header("content-type", "application/json")
        .header("svix-id", msg_id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .body(Body::from(body))
        .expect("a request")
}
