//! What one delivery costs the built binary on the embedded store: its CPU time per delivery,
//! deliveries per second and peak RSS, for one round of the workload in `support/cost.rs`
//! (300 users created, updated, then deleted: 900 signed deliveries, 8 in flight).
//!
//! `scripts/compare-delivery-cost` runs it over two binaries in turn, several rounds, and
//! summarizes; by hand: `cargo bench --bench delivery_cost -- --binary PATH [--label NAME]
//! [--env KEY=VALUE ...]`. The binary runs on a fresh store in a temporary directory, logging
//! at its defaults as JSON lines (as in Azure) to /dev/null. Its CPU is read from its CPU-time
//! clock when it answers `GET /` and after the last delivery, so start-up is not counted.
//!
//! The load generator is a plain HTTP/1.1 writer on one thread over 8 kept-alive connections,
//! every delivery signed before the clock starts: its own CPU per delivery is printed
//! (`driver_cpu_us_per_delivery`) to show it is not the bottleneck.

#[path = "support/cost.rs"]
mod cost;
#[allow(dead_code)]
#[path = "../tests/it/fixtures.rs"]
mod fixtures;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cost::{Delivery, Figures, IN_FLIGHT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn main() {
    let binary = cost::argument("--binary").expect("--binary PATH");
    let label = cost::argument("--label").unwrap_or_else(|| binary.clone());
    let extra: Vec<(String, String)> = std::env::args()
        .zip(std::env::args().skip(1))
        .filter(|(flag, _)| flag == "--env")
        .map(|(_, pair)| {
            let (key, value) = pair.split_once('=').expect("--env KEY=VALUE");
            (key.to_owned(), value.to_owned())
        })
        .collect();

    let dir = tempfile::TempDir::new().expect("a temporary directory");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(&binary)
        .env_clear()
        .env("CLERK_WEBHOOK_SIGNING_SECRET", fixtures::SECRET)
        .env("LOCAL_STORE_PATH", dir.path().join("store.sqlite3"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("LOG_FORMAT", "json")
        .envs(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the handler starts");
    let pid = child.id() as i32;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let figures = runtime.block_on(async {
        let address = format!("127.0.0.1:{port}");
        wait_ready(&address).await;
        let phases = cost::phases("r");
        let mut connections = Vec::new();
        for _ in 0..IN_FLIGHT {
            let stream = TcpStream::connect(&address).await.expect("connects");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            connections.push(BufReader::new(stream));
        }
        let (cpu_before, driver_before) = (cost::process_cpu_ns(pid), cost::process_cpu_ns(0));
        let started = Instant::now();
        let (mut not_ok, mut deliveries, mut phase_cpu_ns) = (0, 0, [0; 3]);
        for (phase, cpu) in phases.iter().zip(&mut phase_cpu_ns) {
            let before = cost::process_cpu_ns(pid);
            deliveries += phase.len();
            not_ok += run_phase(&mut connections, phase).await;
            *cpu = cost::process_cpu_ns(pid) - before;
        }
        let wall_s = started.elapsed().as_secs_f64();
        Figures {
            deliveries,
            not_ok,
            wall_s,
            cpu_ns: cost::process_cpu_ns(pid) - cpu_before,
            peak_rss_kib: cost::status_kib(&pid.to_string(), "VmHWM"),
            rss_anon_kib: cost::status_kib(&pid.to_string(), "RssAnon"),
            driver_cpu_ns: cost::process_cpu_ns(0) - driver_before,
            phase_cpu_ns,
        }
    });
    // SIGTERM, as the host stops it (a profiler wrapping it writes its profile then); killed
    // if it is still there after a while.
    // SAFETY: a signal to the child this process started and has not reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("waits").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    figures.print(&label);
}

/// Every delivery of `phase`, each connection taking the next one when its answer is in.
async fn run_phase(connections: &mut [BufReader<TcpStream>], phase: &[Delivery]) -> usize {
    let next = std::cell::Cell::new(0);
    let workers = connections.iter_mut().map(|connection| {
        let next = &next;
        async move {
            let mut not_ok = 0;
            loop {
                let n = next.get();
                let Some(delivery) = phase.get(n) else {
                    return not_ok;
                };
                next.set(n + 1);
                if post(connection, delivery).await != 200 {
                    not_ok += 1;
                }
            }
        }
    });
    futures::future::join_all(workers).await.into_iter().sum()
}

/// Sends one delivery and reads its whole answer; returns the status.
async fn post(connection: &mut BufReader<TcpStream>, delivery: &Delivery) -> u16 {
    let head = format!(
        "POST /api/ClerkWebhook HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nsvix-id: {}\r\nsvix-timestamp: {}\r\nsvix-signature: {}\r\n\r\n",
        delivery.body.len(),
        delivery.id,
        delivery.timestamp,
        delivery.signature
    );
    // One write: a head and a body in two would meet Nagle's algorithm and delayed ACKs.
    let mut request = head.into_bytes();
    request.extend_from_slice(&delivery.body);
    connection
        .get_mut()
        .write_all(&request)
        .await
        .expect("sends");
    let mut line = String::new();
    connection.read_line(&mut line).await.expect("an answer");
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line, not {line:?}"));
    let mut length = 0;
    loop {
        line.clear();
        connection.read_line(&mut line).await.expect("a header");
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("a length");
        }
    }
    let mut body = vec![0; length];
    connection.read_exact(&mut body).await.expect("the body");
    status
}

/// Polls `GET /` until it answers, as the Functions host does.
async fn wait_ready(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut stream) = TcpStream::connect(address).await {
            let request = "GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n";
            if stream.write_all(request.as_bytes()).await.is_ok() {
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer).await;
                if answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the handler never answered GET /"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
