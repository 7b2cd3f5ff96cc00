//! The built binary under load on the embedded store, over loopback: cold start (spawn, then
//! `GET /` answering, then the first delivery applied), and sustained signed deliveries per
//! second with their latency at 64 concurrent connections.
//!
//! `cargo bench --bench delivery_load` (the bench profile builds the release binary). The load
//! generator shares the machine with the handler, so on a small machine the numbers are a floor
//! for the handler alone. The local store fsyncs every write (`synchronous = FULL`), so the disk
//! under the temporary directory bounds deliveries per second.

// Shared with the integration tests; each benchmark uses part of it.
#[allow(dead_code)]
#[path = "../tests/it/fixtures.rs"]
mod fixtures;
#[path = "support/latency.rs"]
mod latency;
#[path = "support/server.rs"]
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fixtures::{SECRET, user_changed};
use server::{REQUEST_TIMEOUT, Server};
use svix::webhooks::Webhook;

const COLD_STARTS: usize = 10;
const CONNECTIONS: usize = 64;
const LOAD_DURATION: Duration = Duration::from_secs(10);
/// A bound on the load whatever the machine's speed.
const MAX_DELIVERIES: usize = 500_000;
/// Deliveries cycle through this many users: the first round creates them, later rounds update.
const USERS: usize = 2_000;
const T0: i64 = 1_700_000_000_000;
fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        let cold = cold_starts().await;
        let load = sustained_load().await;
        println!();
        println!("delivery_load: release binary, embedded store, loopback");
        println!("{:<44} {:>10}", "measure", "value");
        println!(
            "{:<44} {:>7.1} ms",
            format!("cold start to GET / 200 (median of {COLD_STARTS})"),
            ms(cold.ready)
        );
        println!(
            "{:<44} {:>7.1} ms",
            format!("cold start to first applied (median of {COLD_STARTS})"),
            ms(cold.first_applied)
        );
        println!(
            "{:<44} {:>10}",
            format!(
                "deliveries in {:.1} s, {CONNECTIONS} connections",
                load.elapsed.as_secs_f64()
            ),
            load.latencies.len()
        );
        println!(
            "{:<44} {:>10}",
            "  of which creates / updates",
            format!("{} / {}", load.creates, load.latencies.len() - load.creates)
        );
        latency::print_rate_and_latency("deliveries", &load.latencies, load.elapsed);
        println!("{:<44} {:>10}", "answers other than 200", load.not_ok);
    });
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A signed delivery: headers and exact body.
struct Delivery {
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn delivery(
    signer: &Webhook,
    msg_id: &str,
    event_type: &str,
    user_id: &str,
    version: i64,
) -> Delivery {
    let event = user_changed(event_type, user_id, T0 + version);
    let body = serde_json::to_vec(&event).expect("JSON");
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64;
    let signature = signer
        .sign(msg_id, timestamp, &body)
        .expect("a UTF-8 body signs");
    Delivery {
        headers: vec![
            ("svix-id", msg_id.to_owned()),
            ("svix-timestamp", timestamp.to_string()),
            ("svix-signature", signature),
        ],
        body,
    }
}

async fn send(client: &reqwest::Client, url: &str, delivery: Delivery) -> reqwest::StatusCode {
    let mut request = client
        .post(format!("{url}/api/ClerkWebhook"))
        .header("content-type", "application/json")
        .body(delivery.body);
    for (name, value) in delivery.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("the handler answers");
    let status = response.status();
    // Read the body so the connection goes back to the pool.
    let _ = response.bytes().await;
    status
}

struct ColdStart {
    ready: Duration,
    first_applied: Duration,
}

async fn cold_starts() -> ColdStart {
    let signer = Webhook::new(SECRET).expect("a valid secret");
    let mut ready = Vec::new();
    let mut first_applied = Vec::new();
    for run in 0..COLD_STARTS {
        // A client per run: no connection survives from the previous process.
        let client = client();
        let first = delivery(
            &signer,
            &format!("msg_cold_{run}"),
            "user.created",
            "user_cold",
            1,
        );
        let started = Instant::now();
        let server = Server::spawn(&[]);
        server.wait_ready(&client).await;
        ready.push(started.elapsed());
        assert_eq!(send(&client, &server.url, first).await, 200);
        first_applied.push(started.elapsed());
    }
    ready.sort();
    first_applied.sort();
    ColdStart {
        ready: ready[COLD_STARTS / 2],
        first_applied: first_applied[COLD_STARTS / 2],
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

struct Load {
    /// Sorted.
    latencies: Vec<Duration>,
    creates: usize,
    not_ok: usize,
    elapsed: Duration,
}

async fn sustained_load() -> Load {
    let server = Server::spawn(&[]);
    let client = client();
    server.wait_ready(&client).await;
    let url = Arc::new(server.url.clone());
    let signer = Arc::new(Webhook::new(SECRET).expect("a valid secret"));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, url, signer, next) = (
                client.clone(),
                Arc::clone(&url),
                Arc::clone(&signer),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut creates, mut not_ok) = (0, 0);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= MAX_DELIVERIES || started.elapsed() >= LOAD_DURATION {
                        break;
                    }
                    // Round r of the users carries version r + 1: creates first, then updates.
                    let round = n / USERS;
                    let event_type = if round == 0 {
                        creates += 1;
                        "user.created"
                    } else {
                        "user.updated"
                    };
                    let user_id = format!("user_load_{}", n % USERS);
                    let delivery = delivery(
                        &signer,
                        &format!("msg_load_{n}"),
                        event_type,
                        &user_id,
                        round as i64 + 1,
                    );
                    let sent = Instant::now();
                    let status = send(&client, &url, delivery).await;
                    latencies.push(sent.elapsed());
                    if status != 200 {
                        not_ok += 1;
                    }
                }
                (latencies, creates, not_ok)
            })
        })
        .collect();

    let mut load = Load {
        latencies: Vec::new(),
        creates: 0,
        not_ok: 0,
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let (latencies, creates, not_ok) = worker.await.expect("a load worker");
        load.latencies.extend(latencies);
        load.creates += creates;
        load.not_ok += not_ok;
    }
    load.elapsed = started.elapsed();
    load.latencies.sort();
    load
}
