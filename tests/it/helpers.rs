//! Shared test helpers: Clerk event fixtures, Svix signing, an in-process app over any store,
//! and the built binary run the way the Functions host runs it.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use handler::clerk::ClerkEvent;
use handler::http::{AppState, router};
use handler::store::Store;
use handler::store::local::LocalStore;
use handler::sync::apply::{self, ApplyError, Options, Report};
use handler::sync::decide::Change;
use handler::sync::document::Source;
use handler::sync::document::{self, Document};
use handler::sync::item::{ItemId, Kind};
use handler::verify::Verifier;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

pub use crate::fixtures::{
    OTHER_SECRET, SECRET, clerk_event, clerk_membership, clerk_organization, clerk_user, object,
    user_changed, user_deleted,
};

pub const TTL_SECONDS: u32 = 30 * 86_400;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Expands to a module `$name` with one test per case: `$module::$case(store)` on a store from
/// `$make` (an async expression giving `(Arc<dyn Store>, guard)`; the guard keeps the store's
/// resources alive). How every suite that runs on both stores runs.
macro_rules! cases_on_store {
    ($name:ident, $make:expr, $($module:ident)::+, [$($case:ident),* $(,)?]) => {
        mod $name {
            use $($module)::+ as suite;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _guard) = $make.await;
                    suite::$case(store).await;
                }
            )*
        }
    };
}
pub(crate) use cases_on_store;

/// Svix headers for `body`, signed by the svix crate.
pub fn svix_headers(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let signature = svix::webhooks::Webhook::new(secret)
        .unwrap()
        .sign(msg_id, timestamp, body)
        .unwrap();
    vec![
        ("svix-id".into(), msg_id.into()),
        ("svix-timestamp".into(), timestamp.to_string()),
        ("svix-signature".into(), signature),
    ]
}

/// A fresh message id, as Svix gives each message.
pub fn msg_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "msg_test{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The user document stored for `id`, if any and not deleted.
pub async fn stored_user(store: &dyn Store, id: &str) -> Option<Document> {
    let (stored, _) = store.read(&ItemId::parse(id).unwrap()).await.unwrap();
    stored
        .map(|s| s.document)
        .filter(|d| document::state(d).is_live(Kind::User))
}

/// The item stored for `id` as JSON, tombstones included; `Value::Null` when absent.
pub async fn stored_item(store: &dyn Store, id: &str) -> Value {
    let (stored, _) = store.read(&ItemId::parse(id).unwrap()).await.unwrap();
    stored.map_or(Value::Null, |s| Value::Object(s.document))
}

/// Parses a Clerk event and applies it as a webhook delivery of `msg_id` would, without the
/// resurrection guard.
pub async fn apply_event(
    store: &dyn Store,
    msg_id: &str,
    event: &Value,
) -> Result<Report, ApplyError> {
    let (_, parsed) = ClerkEvent::parse(event.to_string().as_bytes()).unwrap();
    let change = Change::from_event(&parsed).expect("an event the handler handles");
    let options = Options {
        source: Source::Webhook(msg_id),
        tombstone_ttl_seconds: TTL_SECONDS,
        guard: None,
    };
    apply::apply(store, change, options).await
}

/// A fresh local store in its own directory (kept alive by the returned `TempDir`).
pub fn local_store() -> (Arc<dyn Store>, TempDir) {
    let dir = TempDir::new().unwrap();
    let store = LocalStore::open(&dir.path().join("users.sqlite3")).unwrap();
    (Arc::new(store), dir)
}

/// The router in-process over a given store, as the binary builds it.
pub struct TestApp {
    pub store: Arc<dyn Store>,
    router: axum::Router,
}

impl TestApp {
    pub fn with_store(store: Arc<dyn Store>) -> Self {
        let state = AppState::new(
            Verifier::from_secrets(SECRET).unwrap(),
            Arc::clone(&store),
            TTL_SECONDS,
            None,
        );
        Self {
            store,
            router: router(Arc::new(state)),
        }
    }

    /// Signs and posts `event` with a fresh message id.
    pub async fn deliver(&self, event: &Value) -> (StatusCode, Value) {
        self.deliver_as(&msg_id(), event).await
    }

    pub async fn deliver_as(&self, msg_id: &str, event: &Value) -> (StatusCode, Value) {
        let body = serde_json::to_vec(event).unwrap();
        let headers = svix_headers(SECRET, msg_id, now(), &body);
        self.post(&headers, body).await
    }

    pub async fn post(&self, headers: &[(String, String)], body: Vec<u8>) -> (StatusCode, Value) {
        let mut request =
            Request::post(handler::http::WEBHOOK_PATH).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }
}

/// The built `handler` binary, started the way the Functions host starts a custom handler:
/// `FUNCTIONS_CUSTOMHANDLER_PORT` set, `GET /` polled until it answers.
pub struct HandlerProcess {
    child: Child,
    pub base_url: String,
    env: Vec<(String, String)>,
    _dir: TempDir,
}

impl HandlerProcess {
    /// Starts on a fresh local store with the test secret, plus `extra` environment.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let dir = TempDir::new().unwrap();
        let store_path = dir.path().join("users.sqlite3");
        let port = free_port();
        let mut env: Vec<(String, String)> = vec![
            ("CLERK_WEBHOOK_SIGNING_SECRET".into(), SECRET.into()),
            ("LOCAL_STORE_PATH".into(), store_path.display().to_string()),
            ("FUNCTIONS_CUSTOMHANDLER_PORT".into(), port.to_string()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let child = handler_command(&env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let process = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            env,
            _dir: dir,
        };
        process.wait_ready().await;
        process
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(response) = client.get(format!("{}/", self.base_url)).send().await {
                assert_eq!(response.status(), 200);
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("handler did not answer GET / within 5 s");
    }

    /// Posts as the host forwards it: the original bytes and headers to `/api/ClerkWebhook`.
    pub async fn post(&self, headers: &[(String, String)], body: Vec<u8>) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut request = client
            .post(format!("{}/api/ClerkWebhook", self.base_url))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn deliver(&self, event: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(event).unwrap();
        let headers = svix_headers(SECRET, &msg_id(), now(), &body);
        self.post(&headers, body).await
    }

    /// The environment the process was started with.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    pub fn env_value(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// `handler <args>` on the same store, while the server runs.
    pub fn command(&self, args: &[&str]) -> Output {
        handler_command(&self.env).args(args).output().unwrap()
    }

    /// `handler users get <id>`: the document, or `None` when it exits 1 with nothing on stdout.
    pub fn users_get(&self, id: &str) -> Option<Value> {
        self.get("users", id)
    }

    /// `handler <noun> get <id>`: the document, or `None` when it exits 1 with nothing on stdout.
    pub fn get(&self, noun: &str, id: &str) -> Option<Value> {
        let output = self.command(&[noun, "get", id]);
        match output.status.code() {
            Some(0) => Some(serde_json::from_slice(&output.stdout).unwrap()),
            Some(1) => {
                assert!(
                    output.stdout.is_empty(),
                    "a missing user prints nothing on stdout"
                );
                None
            }
            other => panic!(
                "users get exited {other:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    /// `handler users list`: one document per line.
    pub fn users_list(&self) -> Vec<Value> {
        self.list(&["users", "list"])
    }

    /// A listing command (`organizations list`, `memberships list --user ...`): one document
    /// per line.
    pub fn list(&self, args: &[&str]) -> Vec<Value> {
        let output = self.command(args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl Drop for HandlerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with exactly `env` (plus PATH), nothing inherited that could pick another store.
pub fn handler_command(env: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
