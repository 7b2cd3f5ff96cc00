//! The release binary on a fresh embedded store and a free port, started as the Functions host
//! starts it: shared by the benchmarks that drive it over HTTP.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::fixtures::SECRET;

/// Any one request taking longer than this is a failure, not a data point.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Server {
    child: Child,
    pub url: String,
    _dir: TempDir,
}

impl Server {
    /// With the test signing secret, quiet logs, and `extra` environment.
    pub fn spawn(extra: &[(&str, String)]) -> Self {
        let dir = TempDir::new().expect("a temporary directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_handler"))
            .env_clear()
            .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
            .env("LOCAL_STORE_PATH", dir.path().join("users.sqlite3"))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the handler binary starts");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// Polls `GET /` as the host does, at a millisecond's interval so as not to hide start time.
    pub async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            if let Ok(response) = client.get(format!("{}/", self.url)).send().await {
                assert_eq!(response.status(), 200);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the handler never answered GET /"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
