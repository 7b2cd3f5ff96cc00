//! `POST /api/me/sync` for a stored user through the built binary, over loopback: calls per
//! second and p50/p99 latency at 64 concurrent connections. Every call carries an RS256 session
//! token checked against the PEM key (`CLERK_JWT_KEY`), so the signature check is on the hot path
//! with the store read; Clerk (a local double) is asked once, by the call that stores the user.
//!
//! `cargo bench --bench sync_me` (the bench profile builds the release binary). The load generator
//! shares the machine with the handler, so on a small machine the numbers are a floor for the
//! handler alone.

// Shared with the integration tests; this benchmark uses part of each.
#[allow(dead_code)]
#[path = "../tests/it/clerk_api_double.rs"]
mod clerk_api_double;
#[allow(dead_code)]
#[path = "../tests/it/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
#[path = "../tests/it/jwks_double.rs"]
mod jwks_double;
#[path = "support/latency.rs"]
mod latency;
#[path = "../tests/it/loopback.rs"]
mod loopback;
#[path = "support/server.rs"]
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clerk_api_double::ClerkApiDouble;
use fixtures::clerk_user;
use jwks_double::{PARTY, TestKey, TokenBuilder, USER_ID};
use serde_json::Value;
use server::{REQUEST_TIMEOUT, Server};

const CONNECTIONS: usize = 64;
/// Calls measured, after the warm-up.
const CALLS: usize = 20_000;
/// Calls made first and not measured: connections opened, caches and pages warm.
const WARM_UP_CALLS: usize = 2_000;
/// A bound on the measured run whatever the machine's speed.
const MAX_DURATION: Duration = Duration::from_secs(60);
/// The secret key the Clerk double accepts.
const CLERK_KEY: &str = "sk_test_bench";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        let clerk = ClerkApiDouble::start(CLERK_KEY).await;
        clerk.put(clerk_user(USER_ID, now_ms()));
        let key = TestKey::generate("ins_bench");
        let server = Server::spawn(&[
            ("CLERK_SECRET_KEY", CLERK_KEY.to_owned()),
            ("CLERK_API_URL", clerk.url()),
            ("CLERK_JWT_KEY", key.public_pem().to_owned()),
            ("CLERK_AUTHORIZED_PARTIES", PARTY.to_owned()),
        ]);
        let client = client();
        server.wait_ready(&client).await;

        // One token per connection, signed before the clock starts: signing is the client's cost.
        let tokens: Arc<Vec<String>> = Arc::new(
            (0..CONNECTIONS)
                .map(|n| {
                    TokenBuilder::new()
                        .claim("jti", format!("bench{n}"))
                        .expires_in(600)
                        .sign(&key)
                })
                .collect(),
        );
        let first = call(&client, &server.url, &tokens[0]).await;
        assert_eq!(
            first,
            (200, "applied".to_owned()),
            "the first call stores the user"
        );
        assert_eq!(clerk.request_count(), 1);

        load(&client, &server.url, &tokens, WARM_UP_CALLS, MAX_DURATION).await;
        let load = load(&client, &server.url, &tokens, CALLS, MAX_DURATION).await;
        assert_eq!(
            clerk.request_count(),
            1,
            "a stored user never costs a Clerk request"
        );

        println!();
        println!(
            "sync_me: release binary, embedded store, RS256 session tokens (PEM key), loopback"
        );
        println!("{:<44} {:>10}", "measure", "value");
        println!(
            "{:<44} {:>10}",
            format!(
                "calls in {:.1} s, {CONNECTIONS} connections",
                load.elapsed.as_secs_f64()
            ),
            load.latencies.len()
        );
        latency::print_rate_and_latency("calls", &load.latencies, load.elapsed);
        println!(
            "{:<44} {:>10}",
            "answers other than 200 \"present\"", load.not_present
        );
    });
}

fn now_ms() -> i64 {
    jwks_double::now() * 1000
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// One call: the status and the body's `status`.
async fn call(client: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    let response = client
        .post(format!("{url}/api/me/sync"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the handler answers");
    let status = response.status().as_u16();
    // Read the body so the connection goes back to the pool.
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["status"].as_str().unwrap_or_default().to_owned(),
    )
}

struct Load {
    /// Sorted.
    latencies: Vec<Duration>,
    not_present: usize,
    elapsed: Duration,
}

/// `calls` calls over `CONNECTIONS` concurrent workers, or as many as `max_duration` allows.
async fn load(
    client: &reqwest::Client,
    url: &str,
    tokens: &Arc<Vec<String>>,
    calls: usize,
    max_duration: Duration,
) -> Load {
    let url = Arc::new(url.to_owned());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|worker| {
            let (client, url, tokens, next) = (
                client.clone(),
                Arc::clone(&url),
                Arc::clone(tokens),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut not_present = 0;
                while next.fetch_add(1, Ordering::Relaxed) < calls
                    && started.elapsed() < max_duration
                {
                    let sent = Instant::now();
                    let answer = call(&client, &url, &tokens[worker]).await;
                    latencies.push(sent.elapsed());
                    if answer != (200, "present".to_owned()) {
                        not_present += 1;
                    }
                }
                (latencies, not_present)
            })
        })
        .collect();
    let mut load = Load {
        latencies: Vec::with_capacity(calls),
        not_present: 0,
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let (latencies, not_present) = worker.await.expect("a load worker");
        load.latencies.extend(latencies);
        load.not_present += not_present;
    }
    load.elapsed = started.elapsed();
    load.latencies.sort();
    load
}
